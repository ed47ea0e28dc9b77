"""Host applications: ping, traceroute, UDP and TCP endpoints."""
