"""`emu bench`: forwarding and table workloads, each with a baseline measured in the same run."""
