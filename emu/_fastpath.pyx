# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled data-plane helpers for emu: LPM/FDB/neighbour tables and packet byte ops.

The pure-Python twin ``emu._fastpath_py`` has the same public API and gives the
same results; tests check one against the other.

LpmTable keeps up to 16 routes in a linear array (longest first) and switches to a
stride-6 tree bitmap (Eatherton et al.): each prefix is one bit in one 32-byte node, so
insert/remove touch one node path and never expand prefixes; a lookup reads at most six
nodes.  FdbTable/NeighTable are open-addressing hash tables with backward-shift deletion.

Conventions shared by both modules:
- IPv4 addresses are ints in host order (0..2**32-1), MACs are 48-bit ints.
- Mutators (``insert``, ``learn``, ``set``...) raise ValueError for any argument
  outside its semantic range.  Hot-path scalar arguments are C-typed: an int
  that does not fit the C type raises OverflowError (the twin mimics this).
- Byte buffers are bytes/bytearray/any contiguous buffer; functions that write
  need a writable one (bytearray) and raise TypeError otherwise.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.number cimport PyNumber_Index
from cpython cimport array

import array

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define EMU_POPCNT64(x) ((int)__builtin_popcountll((unsigned long long)(x)))
    #define EMU_HIBIT64(x) (63 - (int)__builtin_clzll((unsigned long long)(x)))
    #else
    static int EMU_POPCNT64(unsigned long long x) {
        x = x - ((x >> 1) & 0x5555555555555555ULL);
        x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
        x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
        return (int)((x * 0x0101010101010101ULL) >> 56);
    }
    static int EMU_HIBIT64(unsigned long long x) {
        int r = 0;
        while (x >>= 1) r++;
        return r;
    }
    #endif
    """
    int EMU_POPCNT64(uint64_t x) noexcept nogil
    int EMU_HIBIT64(uint64_t x) noexcept nogil


cdef array.array _Q_TEMPLATE = array.array('q', [])

# --------------------------------------------------------------------------
# Buffer helpers
# --------------------------------------------------------------------------

cdef int _get_ro(object o, Py_buffer *view, const uint8_t **p, Py_ssize_t *n) except -1:
    """Point *p at o's bytes; returns 1 when view must be released."""
    if type(o) is bytes:
        p[0] = <const uint8_t *>PyBytes_AS_STRING(o)
        n[0] = PyBytes_GET_SIZE(o)
        return 0
    if type(o) is bytearray:
        p[0] = <const uint8_t *>PyByteArray_AS_STRING(o)
        n[0] = PyByteArray_GET_SIZE(o)
        return 0
    PyObject_GetBuffer(o, view, PyBUF_SIMPLE)
    p[0] = <const uint8_t *>view.buf
    n[0] = view.len
    return 1


cdef int _get_rw(object o, Py_buffer *view, uint8_t **p, Py_ssize_t *n) except -1:
    """Like _get_ro but the buffer must be writable (TypeError otherwise)."""
    if type(o) is bytearray:
        p[0] = <uint8_t *>PyByteArray_AS_STRING(o)
        n[0] = PyByteArray_GET_SIZE(o)
        return 0
    if type(o) is bytes:
        raise TypeError("buffer is read-only; pass a bytearray")
    PyObject_GetBuffer(o, view, PyBUF_SIMPLE)
    if view.readonly:
        PyBuffer_Release(view)
        raise TypeError("buffer is read-only; pass a bytearray")
    p[0] = <uint8_t *>view.buf
    n[0] = view.len
    return 1


cdef object _words(object buf, Py_ssize_t itemsize):
    """Contiguous memoryview over buf holding itemsize-byte words (ValueError if not)."""
    cdef object mv = memoryview(buf)
    if not mv.c_contiguous:
        raise ValueError("buffer must be C-contiguous")
    if mv.itemsize == itemsize:
        return mv
    if mv.itemsize == 1:
        if mv.nbytes % itemsize:
            raise ValueError(f"byte buffer length must be a multiple of {itemsize}")
        return mv
    raise ValueError(f"expected a buffer of {itemsize * 8}-bit words or raw bytes")


cdef inline uint16_t _rd16(const uint8_t *p) noexcept nogil:
    return <uint16_t>((p[0] << 8) | p[1])


cdef inline uint32_t _rd32(const uint8_t *p) noexcept nogil:
    return ((<uint32_t>p[0]) << 24) | ((<uint32_t>p[1]) << 16) | ((<uint32_t>p[2]) << 8) | p[3]


cdef inline void _wr16(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = (v >> 8) & 0xFF
    p[1] = v & 0xFF


cdef inline void _wr32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = (v >> 24) & 0xFF
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef inline void _wr48(uint8_t *p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(6):
        p[i] = (v >> (40 - 8 * i)) & 0xFF


cdef uint64_t _inet_acc(const uint8_t *p, Py_ssize_t n, uint64_t acc) noexcept nogil:
    """Add big-endian 16-bit words of p[0:n] to acc (odd tail byte zero-padded)."""
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        acc += ((<uint64_t>p[i]) << 8 | p[i + 1]) + ((<uint64_t>p[i + 2]) << 8 | p[i + 3]) \
            + ((<uint64_t>p[i + 4]) << 8 | p[i + 5]) + ((<uint64_t>p[i + 6]) << 8 | p[i + 7])
        i += 8
    while i + 1 < n:
        acc += (<uint64_t>p[i]) << 8 | p[i + 1]
        i += 2
    if i < n:
        acc += (<uint64_t>p[i]) << 8
    return acc


cdef inline uint32_t _fold(uint64_t s) noexcept nogil:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return <uint32_t>s


cdef inline void _csum_fix(uint8_t *field, uint64_t delta_neg_old, uint64_t delta_new,
                           bint udp) noexcept nogil:
    """RFC 1624 eqn. 3 on the checksum at field; delta_neg_old is the sum of ~old words."""
    cdef uint32_t hc = _rd16(field)
    cdef uint32_t nc
    if udp and hc == 0:
        return
    nc = (~_fold((~hc & 0xFFFF) + delta_neg_old + delta_new)) & 0xFFFF
    if udp and nc == 0:
        nc = 0xFFFF
    _wr16(field, nc)


cdef inline uint64_t _neg32(uint32_t v) noexcept nogil:
    return ((~(v >> 16)) & 0xFFFF) + ((~v) & 0xFFFF)


cdef inline uint64_t _pos32(uint32_t v) noexcept nogil:
    return (v >> 16) + (v & 0xFFFF)


cdef inline uint64_t _neg16(uint32_t v) noexcept nogil:
    return (~v) & 0xFFFF


# --------------------------------------------------------------------------
# LPM: small linear array, or a tree bitmap (stride 6) in block-allocated pools
# --------------------------------------------------------------------------

ctypedef struct TbNode:
    uint64_t int_bm      # prefixes of length 0..5 inside this stride (bit = heap position)
    uint64_t full_bm     # prefixes of length 6 (bit = slot)
    uint64_t ext_bm      # children (bit = slot)
    uint32_t child_base  # first child (children are contiguous in the node pool)
    uint32_t result_base # first value (internal by position, then full by slot)

ctypedef struct U32Vec:
    uint32_t *d
    uint32_t n
    uint32_t cap

ctypedef struct Pool:
    char *mem
    size_t esize
    uint32_t used
    uint32_t cap
    U32Vec *freel        # freel[k]: starts of free blocks of exactly k elements
    int nfree
    uint64_t free_elems  # elements sitting on the free lists
    uint64_t nonempty[2] # bit k set when freel[k] has blocks

cdef enum:
    SMALL_MAX = 16       # up to this many routes: linear scan
    SMALL_LOW = 8        # shrink back to linear when a big table drops to this
    NODE_BLOCKS = 65     # a node has at most 64 children
    RES_BLOCKS = 128     # and at most 63 + 64 values

cdef uint64_t _MATCH[64]
cdef uint8_t _POSLEN[64]


cdef void _init_tables() noexcept:
    cdef int s, l, pos
    for s in range(64):
        _MATCH[s] = 0
        for l in range(6):
            _MATCH[s] |= (<uint64_t>1) << ((1 << l) - 1 + (s >> (6 - l)))
    for l in range(6):
        for pos in range((1 << l) - 1, (1 << (l + 1)) - 1):
            _POSLEN[pos] = l
    _POSLEN[63] = 6


_init_tables()


cdef int _pool_init(Pool *p, size_t esize, int nfree) except -1:
    p.mem = NULL
    p.esize = esize
    p.used = 0
    p.cap = 0
    p.nfree = nfree
    p.free_elems = 0
    p.nonempty[0] = 0
    p.nonempty[1] = 0
    p.freel = <U32Vec *>malloc(nfree * sizeof(U32Vec))
    if p.freel == NULL:
        raise MemoryError()
    memset(p.freel, 0, nfree * sizeof(U32Vec))
    return 0


cdef void _pool_destroy(Pool *p) noexcept:
    cdef int k
    if p.freel != NULL:
        for k in range(p.nfree):
            free(p.freel[k].d)
        free(p.freel)
    free(p.mem)
    p.mem = NULL
    p.freel = NULL
    p.used = 0
    p.cap = 0


cdef size_t _pool_bytes(Pool *p) noexcept:
    cdef size_t total = 0
    cdef int k
    if p.freel == NULL:
        return 0
    total = <size_t>p.cap * p.esize + p.nfree * sizeof(U32Vec)
    for k in range(p.nfree):
        total += p.freel[k].cap * sizeof(uint32_t)
    return total


cdef uint32_t _pool_alloc(Pool *p, uint32_t k) except? 0xFFFFFFFF:
    """Allocate k contiguous elements (k >= 1); returns the start index.

    Takes a free block of exactly k, else splits the smallest larger free block
    (the rest goes back on its list), else bumps the end of the pool.
    """
    cdef U32Vec *v
    cdef uint64_t newcap, bits
    cdef char *mem
    cdef uint32_t start, j = 0, w
    if (p.nonempty[k >> 6] >> (k & 63)) & 1:
        j = k
    else:
        w = (k + 1) >> 6
        while w < 2 and <int>w * 64 < p.nfree:
            bits = p.nonempty[w]
            if w == (k + 1) >> 6:
                bits &= ~((((<uint64_t>1) << ((k + 1) & 63))) - 1)
            if bits:
                j = w * 64 + EMU_HIBIT64(bits & (~bits + 1))
                break
            w += 1
    if j:
        v = &p.freel[j]
        v.n -= 1
        start = v.d[v.n]
        if v.n == 0:
            p.nonempty[j >> 6] &= ~((<uint64_t>1) << (j & 63))
        p.free_elems -= j
        if j > k:
            _pool_free(p, start + k, j - k)
        return start
    if <uint64_t>p.used + k > p.cap:
        newcap = <uint64_t>p.cap + (p.cap >> 2)
        if newcap < <uint64_t>p.used + k:
            newcap = <uint64_t>p.used + k
        if newcap < 4:
            newcap = 4
        if newcap > 0xFFFFFFF0:
            raise MemoryError("LPM pool too large")
        mem = <char *>realloc(p.mem, newcap * p.esize)
        if mem == NULL:
            raise MemoryError()
        p.mem = mem
        p.cap = <uint32_t>newcap
    p.used += k
    return p.used - k


cdef int _pool_free(Pool *p, uint32_t start, uint32_t k) except -1:
    cdef U32Vec *v
    cdef uint32_t newcap
    cdef uint32_t *d
    if k == 0:
        return 0
    if start + k == p.used:
        p.used = start
        return 0
    v = &p.freel[k]
    if v.n == v.cap:
        newcap = v.cap * 2 if v.cap else 4
        d = <uint32_t *>realloc(v.d, newcap * sizeof(uint32_t))
        if d == NULL:
            raise MemoryError()
        v.d = d
        v.cap = newcap
    v.d[v.n] = start
    v.n += 1
    p.free_elems += k
    p.nonempty[k >> 6] |= (<uint64_t>1) << (k & 63)
    return 0


cdef int _pool_reserve(Pool *p, uint32_t n) except -1:
    """Make the capacity at least n elements (exactly n when growing)."""
    cdef char *mem
    if n <= p.cap:
        return 0
    mem = <char *>realloc(p.mem, <size_t>n * p.esize)
    if mem == NULL:
        raise MemoryError()
    p.mem = mem
    p.cap = n
    return 0


cdef inline uint32_t _mask(int plen) noexcept nogil:
    if plen == 0:
        return 0
    return (<uint32_t>0xFFFFFFFFU) << (32 - plen)


cdef class LpmTable:
    """Longest-prefix-match table for IPv4 prefixes mapping to non-negative ints.

    Up to 16 routes live in a linear array scanned longest-first (a pod has ~3);
    above that a stride-6 tree bitmap with per-node contiguous child/value blocks.
    Blocks freed by updates are reused (exact size, else by splitting a larger one);
    when free blocks exceed a quarter of the live data the trie is copied into
    exact-size arrays, so storage stays within ~1.5x of live (amortised O(1) per update).
    """

    cdef uint32_t sp[16]
    cdef uint32_t smask[16]
    cdef uint8_t splen[16]
    cdef int64_t sval[16]
    cdef int nsmall
    cdef bint big
    cdef Pool nodes
    cdef Pool res
    cdef Py_ssize_t count
    cdef uint32_t nnodes

    def __cinit__(self):
        self.nnodes = 0
        self.nsmall = 0
        self.big = False
        self.count = 0
        self.nodes.freel = NULL
        self.nodes.mem = NULL
        self.res.freel = NULL
        self.res.mem = NULL

    def __dealloc__(self):
        _pool_destroy(&self.nodes)
        _pool_destroy(&self.res)

    # ---- validation -------------------------------------------------------

    cdef int _check(self, object prefix, object plen, uint32_t *p, int *l) except -1:
        prefix = PyNumber_Index(prefix)
        plen = PyNumber_Index(plen)
        if not (0 <= plen <= 32):
            raise ValueError(f"plen must be in 0..32, got {plen}")
        if not (0 <= prefix <= 0xFFFFFFFF):
            raise ValueError(f"prefix out of range: {prefix}")
        l[0] = plen
        p[0] = <uint32_t>prefix
        if p[0] & ~_mask(l[0]):
            raise ValueError(f"prefix has host bits set beyond /{plen}")
        return 0

    # ---- lookup -------------------------------------------------------------

    cdef inline int64_t _lookup(self, uint32_t addr, int *plen_out) noexcept nogil:
        cdef int i, d, p
        cdef uint64_t key, bit, m
        cdef int64_t best = -1
        cdef int bestlen = -1
        cdef uint32_t ni = 0
        cdef TbNode *nodes
        cdef TbNode *n
        cdef uint32_t s
        if not self.big:
            for i in range(self.nsmall):
                if (addr & self.smask[i]) == self.sp[i]:
                    plen_out[0] = self.splen[i]
                    return self.sval[i]
            return -1
        nodes = <TbNode *>self.nodes.mem
        key = (<uint64_t>addr) << 4
        for d in range(6):
            n = &nodes[ni]
            s = (key >> (30 - 6 * d)) & 63
            bit = (<uint64_t>1) << s
            if n.full_bm & bit:
                best = n.result_base + EMU_POPCNT64(n.int_bm) + EMU_POPCNT64(n.full_bm & (bit - 1))
                bestlen = 6 * d + 6
            else:
                m = n.int_bm & _MATCH[s]
                if m:
                    p = EMU_HIBIT64(m)
                    best = n.result_base + EMU_POPCNT64(n.int_bm & (((<uint64_t>1) << p) - 1))
                    bestlen = 6 * d + _POSLEN[p]
            if not (n.ext_bm & bit):
                break
            ni = n.child_base + EMU_POPCNT64(n.ext_bm & (bit - 1))
        if best < 0:
            return -1
        plen_out[0] = bestlen
        return (<int64_t *>self.res.mem)[best]

    def lookup(self, uint32_t addr):
        """Value of the longest prefix containing addr, or -1."""
        cdef int plen
        return self._lookup(addr, &plen)

    def lookup_prefix(self, uint32_t addr):
        """(prefix, plen, value) of the longest prefix containing addr, or None."""
        cdef int plen = 0
        cdef int64_t v = self._lookup(addr, &plen)
        if v < 0:
            return None
        return (addr & _mask(plen), plen, v)

    def lookup_batch(self, addrs):
        """Look up every uint32 in a buffer; array('q') of values (-1 = miss)."""
        cdef object mv = _words(addrs, 4)
        cdef Py_buffer view
        cdef const uint8_t *p
        cdef Py_ssize_t nbytes, i, n
        cdef int plen
        cdef uint32_t a
        cdef int rel = _get_ro(mv, &view, &p, &nbytes)
        cdef array.array out
        cdef int64_t *o
        try:
            n = nbytes // 4
            out = array.clone(_Q_TEMPLATE, n, False)
            o = <int64_t *>out.data.as_longlongs
            for i in range(n):
                memcpy(&a, p + 4 * i, 4)
                o[i] = self._lookup(a, &plen)
        finally:
            if rel:
                PyBuffer_Release(&view)
        return out

    # ---- small mode -----------------------------------------------------------

    cdef int _small_find(self, uint32_t prefix, int plen) noexcept:
        cdef int i
        for i in range(self.nsmall):
            if self.sp[i] == prefix and self.splen[i] == plen:
                return i
        return -1

    cdef void _small_add(self, uint32_t prefix, int plen, int64_t value) noexcept:
        cdef int i = self.nsmall
        while i > 0 and self.splen[i - 1] < plen:
            self.sp[i] = self.sp[i - 1]
            self.smask[i] = self.smask[i - 1]
            self.splen[i] = self.splen[i - 1]
            self.sval[i] = self.sval[i - 1]
            i -= 1
        self.sp[i] = prefix
        self.smask[i] = _mask(plen)
        self.splen[i] = plen
        self.sval[i] = value
        self.nsmall += 1

    cdef void _small_del(self, int i) noexcept:
        cdef int j
        for j in range(i, self.nsmall - 1):
            self.sp[j] = self.sp[j + 1]
            self.smask[j] = self.smask[j + 1]
            self.splen[j] = self.splen[j + 1]
            self.sval[j] = self.sval[j + 1]
        self.nsmall -= 1

    # ---- tree bitmap ----------------------------------------------------------

    cdef int _to_big(self) except -1:
        cdef int i
        _pool_init(&self.nodes, sizeof(TbNode), NODE_BLOCKS)
        _pool_init(&self.res, sizeof(int64_t), RES_BLOCKS)
        _pool_alloc(&self.nodes, 1)
        memset(self.nodes.mem, 0, sizeof(TbNode))
        self.nnodes = 1
        self.big = True
        for i in range(self.nsmall):
            self._tb_insert(self.sp[i], self.splen[i], self.sval[i])
        self.nsmall = 0
        return 0

    cdef int _to_small(self) except -1:
        cdef list entries = self.items()
        _pool_destroy(&self.nodes)
        _pool_destroy(&self.res)
        self.big = False
        self.nsmall = 0
        self.nnodes = 0
        for prefix, plen, value in entries:
            self._small_add(prefix, plen, value)
        return 0

    cdef uint32_t _child(self, uint32_t ni, uint32_t s) except? 0xFFFFFFFF:
        """Index of child s of node ni, creating it if absent."""
        cdef TbNode *n = &(<TbNode *>self.nodes.mem)[ni]
        cdef uint64_t bit = (<uint64_t>1) << s
        cdef uint32_t rank = EMU_POPCNT64(n.ext_bm & (bit - 1))
        cdef uint32_t cnt, nb, old
        cdef TbNode *nodes
        if n.ext_bm & bit:
            return n.child_base + rank
        cnt = EMU_POPCNT64(n.ext_bm)
        nb = _pool_alloc(&self.nodes, cnt + 1)
        nodes = <TbNode *>self.nodes.mem
        n = &nodes[ni]
        old = n.child_base
        if rank:
            memcpy(&nodes[nb], &nodes[old], rank * sizeof(TbNode))
        memset(&nodes[nb + rank], 0, sizeof(TbNode))
        if cnt > rank:
            memcpy(&nodes[nb + rank + 1], &nodes[old + rank], (cnt - rank) * sizeof(TbNode))
        n.child_base = nb
        n.ext_bm |= bit
        _pool_free(&self.nodes, old, cnt)
        self.nnodes += 1
        return nb + rank

    cdef int _slot_of(self, uint32_t prefix, int plen, int *depth, uint64_t *bit,
                      bint *full, uint32_t *slot) noexcept:
        cdef int d, l
        cdef uint32_t s
        if plen == 0:
            d = 0
            l = 0
        else:
            d = (plen - 1) // 6
            l = plen - 6 * d
        s = ((<uint64_t>prefix << 4) >> (30 - 6 * d)) & 63
        depth[0] = d
        slot[0] = s
        if l == 6:
            full[0] = True
            bit[0] = (<uint64_t>1) << s
        else:
            full[0] = False
            bit[0] = (<uint64_t>1) << ((1 << l) - 1 + (s >> (6 - l)))
        return 0

    cdef inline uint32_t _rank(self, TbNode *n, uint64_t bit, bint full) noexcept:
        if full:
            return EMU_POPCNT64(n.int_bm) + EMU_POPCNT64(n.full_bm & (bit - 1))
        return EMU_POPCNT64(n.int_bm & (bit - 1))

    cdef int _tb_insert(self, uint32_t prefix, int plen, int64_t value) except -1:
        """Insert or replace; returns 1 when the prefix is new."""
        cdef int d, i
        cdef uint64_t bit, key = (<uint64_t>prefix) << 4
        cdef bint full
        cdef uint32_t slot, ni = 0, rank, cnt, nb, old
        cdef TbNode *n
        cdef int64_t *res
        self._slot_of(prefix, plen, &d, &bit, &full, &slot)
        for i in range(d):
            ni = self._child(ni, (key >> (30 - 6 * i)) & 63)
        n = &(<TbNode *>self.nodes.mem)[ni]
        rank = self._rank(n, bit, full)
        if (n.full_bm if full else n.int_bm) & bit:
            (<int64_t *>self.res.mem)[n.result_base + rank] = value
            return 0
        cnt = EMU_POPCNT64(n.int_bm) + EMU_POPCNT64(n.full_bm)
        nb = _pool_alloc(&self.res, cnt + 1)
        res = <int64_t *>self.res.mem
        old = n.result_base
        if rank:
            memcpy(&res[nb], &res[old], rank * sizeof(int64_t))
        res[nb + rank] = value
        if cnt > rank:
            memcpy(&res[nb + rank + 1], &res[old + rank], (cnt - rank) * sizeof(int64_t))
        n.result_base = nb
        if full:
            n.full_bm |= bit
        else:
            n.int_bm |= bit
        _pool_free(&self.res, old, cnt)
        return 1

    cdef int _tb_find(self, uint32_t prefix, int plen, int64_t *value) noexcept:
        cdef int d, i
        cdef uint64_t bit, cbit, key = (<uint64_t>prefix) << 4
        cdef bint full
        cdef uint32_t slot, ni = 0
        cdef TbNode *nodes = <TbNode *>self.nodes.mem
        cdef TbNode *n
        self._slot_of(prefix, plen, &d, &bit, &full, &slot)
        for i in range(d):
            n = &nodes[ni]
            cbit = (<uint64_t>1) << ((key >> (30 - 6 * i)) & 63)
            if not (n.ext_bm & cbit):
                return 0
            ni = n.child_base + EMU_POPCNT64(n.ext_bm & (cbit - 1))
        n = &nodes[ni]
        if not ((n.full_bm if full else n.int_bm) & bit):
            return 0
        value[0] = (<int64_t *>self.res.mem)[n.result_base + self._rank(n, bit, full)]
        return 1

    cdef int _tb_remove(self, uint32_t prefix, int plen) except -1:
        cdef int d, i
        cdef uint64_t bit, cbit, key = (<uint64_t>prefix) << 4
        cdef bint full
        cdef uint32_t slot, ni = 0, rank, cnt, nb, old, pi
        cdef uint32_t path[6]
        cdef uint32_t slots[6]
        cdef TbNode *nodes = <TbNode *>self.nodes.mem
        cdef TbNode *n
        cdef int64_t *res
        self._slot_of(prefix, plen, &d, &bit, &full, &slot)
        for i in range(d):
            n = &nodes[ni]
            slots[i] = (key >> (30 - 6 * i)) & 63
            cbit = (<uint64_t>1) << slots[i]
            if not (n.ext_bm & cbit):
                return 0
            path[i] = ni
            ni = n.child_base + EMU_POPCNT64(n.ext_bm & (cbit - 1))
        n = &nodes[ni]
        if not ((n.full_bm if full else n.int_bm) & bit):
            return 0
        rank = self._rank(n, bit, full)
        cnt = EMU_POPCNT64(n.int_bm) + EMU_POPCNT64(n.full_bm)
        old = n.result_base
        if cnt > 1:
            nb = _pool_alloc(&self.res, cnt - 1)
            res = <int64_t *>self.res.mem
            if rank:
                memcpy(&res[nb], &res[old], rank * sizeof(int64_t))
            if cnt - 1 > rank:
                memcpy(&res[nb + rank], &res[old + rank + 1], (cnt - 1 - rank) * sizeof(int64_t))
            n.result_base = nb
        else:
            n.result_base = 0
        _pool_free(&self.res, old, cnt)
        if full:
            n.full_bm &= ~bit
        else:
            n.int_bm &= ~bit
        # prune empty nodes upwards (the root stays)
        i = d
        while i > 0:
            nodes = <TbNode *>self.nodes.mem
            n = &nodes[ni]
            if n.int_bm or n.full_bm or n.ext_bm:
                break
            pi = path[i - 1]
            n = &nodes[pi]
            cbit = (<uint64_t>1) << slots[i - 1]
            rank = EMU_POPCNT64(n.ext_bm & (cbit - 1))
            cnt = EMU_POPCNT64(n.ext_bm)
            old = n.child_base
            if cnt > 1:
                nb = _pool_alloc(&self.nodes, cnt - 1)
                nodes = <TbNode *>self.nodes.mem
                n = &nodes[pi]
                if rank:
                    memcpy(&nodes[nb], &nodes[old], rank * sizeof(TbNode))
                if cnt - 1 > rank:
                    memcpy(&nodes[nb + rank], &nodes[old + rank + 1], (cnt - 1 - rank) * sizeof(TbNode))
                n.child_base = nb
            else:
                n.child_base = 0
            n.ext_bm &= ~cbit
            _pool_free(&self.nodes, old, cnt)
            self.nnodes -= 1
            ni = pi
            i -= 1
        return 1

    cdef int _relocate(self, Pool *nn, Pool *nr, uint32_t oi, uint32_t ni) except -1:
        """Copy the subtree under old node oi (already copied to nn[ni]) into nn/nr."""
        cdef TbNode old = (<TbNode *>self.nodes.mem)[oi]
        cdef uint32_t k, base, j
        k = EMU_POPCNT64(old.int_bm) + EMU_POPCNT64(old.full_bm)
        if k:
            base = _pool_alloc(nr, k)
            memcpy(nr.mem + <size_t>base * sizeof(int64_t),
                   self.res.mem + <size_t>old.result_base * sizeof(int64_t), k * sizeof(int64_t))
            (<TbNode *>nn.mem)[ni].result_base = base
        k = EMU_POPCNT64(old.ext_bm)
        if k:
            base = _pool_alloc(nn, k)
            memcpy(nn.mem + <size_t>base * sizeof(TbNode),
                   self.nodes.mem + <size_t>old.child_base * sizeof(TbNode), k * sizeof(TbNode))
            (<TbNode *>nn.mem)[ni].child_base = base
            for j in range(k):
                self._relocate(nn, nr, old.child_base + j, base + j)
        return 0

    cdef int _compact(self) except -1:
        """Rebuild the pools with exact sizes and no free blocks."""
        cdef Pool nn, nr
        nn.freel = NULL
        nn.mem = NULL
        nr.freel = NULL
        nr.mem = NULL
        try:
            _pool_init(&nn, sizeof(TbNode), NODE_BLOCKS)
            _pool_init(&nr, sizeof(int64_t), RES_BLOCKS)
            _pool_reserve(&nn, self.nnodes)
            _pool_reserve(&nr, <uint32_t>self.count if self.count else 1)
            _pool_alloc(&nn, 1)
            (<TbNode *>nn.mem)[0] = (<TbNode *>self.nodes.mem)[0]
            self._relocate(&nn, &nr, 0, 0)
        except BaseException:
            _pool_destroy(&nn)
            _pool_destroy(&nr)
            raise
        _pool_destroy(&self.nodes)
        _pool_destroy(&self.res)
        self.nodes = nn
        self.res = nr
        return 0

    cdef inline int _maybe_compact(self) except -1:
        if (self.nodes.free_elems > (self.nnodes >> 2) + 64
                or self.res.free_elems > (<uint64_t>self.count >> 2) + 64):
            self._compact()
        return 0

    def _debug_stats(self):
        """Internal counters for tests: (mode, nodes, node pool used/cap/free, value pool used/cap/free)."""
        return ("trie" if self.big else "linear", self.nnodes,
                self.nodes.used, self.nodes.cap, self.nodes.free_elems,
                self.res.used, self.res.cap, self.res.free_elems)

    cdef int _walk(self, uint32_t ni, int d, uint64_t base, list out) except -1:
        cdef TbNode n = (<TbNode *>self.nodes.mem)[ni]
        cdef int64_t *res = <int64_t *>self.res.mem
        cdef uint64_t bm
        cdef int pos, l, shift = 30 - 6 * d
        cdef uint32_t r = 0, k = 0
        cdef uint64_t key
        bm = n.int_bm
        while bm:
            pos = EMU_HIBIT64(bm & (~bm + 1))
            bm &= bm - 1
            l = _POSLEN[pos]
            key = base | ((<uint64_t>(pos - ((1 << l) - 1)) << (6 - l)) << shift)
            out.append((<uint32_t>(key >> 4), 6 * d + l, res[n.result_base + r]))
            r += 1
        bm = n.full_bm
        while bm:
            pos = EMU_HIBIT64(bm & (~bm + 1))
            bm &= bm - 1
            key = base | ((<uint64_t>pos) << shift)
            out.append((<uint32_t>(key >> 4), 6 * d + 6, res[n.result_base + r]))
            r += 1
        bm = n.ext_bm
        while bm:
            pos = EMU_HIBIT64(bm & (~bm + 1))
            bm &= bm - 1
            self._walk(n.child_base + k, d + 1, base | ((<uint64_t>pos) << shift), out)
            k += 1
        return 0

    # ---- public mutators / accessors ------------------------------------------

    def insert(self, prefix, plen, value):
        """Map prefix/plen to value (replacing an existing value)."""
        cdef uint32_t p
        cdef int l, i
        cdef int64_t v
        self._check(prefix, plen, &p, &l)
        value = PyNumber_Index(value)
        if not (0 <= value <= 0x7FFFFFFFFFFFFFFF):
            raise ValueError(f"value must be a non-negative int64, got {value}")
        v = value
        if not self.big:
            i = self._small_find(p, l)
            if i >= 0:
                self.sval[i] = v
                return
            if self.nsmall < SMALL_MAX:
                self._small_add(p, l, v)
                self.count += 1
                return
            self._to_big()
        self.count += self._tb_insert(p, l, v)
        self._maybe_compact()

    def remove(self, prefix, plen):
        """Delete prefix/plen; True if it was present."""
        cdef uint32_t p
        cdef int l, i
        self._check(prefix, plen, &p, &l)
        if not self.big:
            i = self._small_find(p, l)
            if i < 0:
                return False
            self._small_del(i)
            self.count -= 1
            return True
        if not self._tb_remove(p, l):
            return False
        self.count -= 1
        if self.count <= SMALL_LOW:
            self._to_small()
        else:
            self._maybe_compact()
        return True

    def get(self, prefix, plen):
        """Exact-match value of prefix/plen, or -1."""
        cdef uint32_t p
        cdef int l, i
        cdef int64_t v = -1
        self._check(prefix, plen, &p, &l)
        if not self.big:
            i = self._small_find(p, l)
            return self.sval[i] if i >= 0 else -1
        if self._tb_find(p, l, &v):
            return v
        return -1

    def items(self):
        """All (prefix, plen, value) sorted by (prefix, plen)."""
        cdef list out = []
        cdef int i
        if not self.big:
            for i in range(self.nsmall):
                out.append((self.sp[i], self.splen[i], self.sval[i]))
        else:
            self._walk(0, 0, 0, out)
        out.sort()
        return out

    def clear(self):
        """Remove all routes and release the trie storage."""
        _pool_destroy(&self.nodes)
        _pool_destroy(&self.res)
        self.big = False
        self.nsmall = 0
        self.count = 0
        self.nnodes = 0

    def __len__(self):
        return self.count

    def memory_bytes(self):
        """Bytes of the object plus every array it allocated (capacity, not use)."""
        return type(self).__basicsize__ + _pool_bytes(&self.nodes) + _pool_bytes(&self.res)

    def __sizeof__(self):
        return self.memory_bytes()

    def __repr__(self):
        return f"<LpmTable routes={self.count} {'trie' if self.big else 'linear'}>"


# --------------------------------------------------------------------------
# Open-addressing hash table (linear probing, backward-shift deletion)
# --------------------------------------------------------------------------

ctypedef struct HEnt:
    uint64_t key
    int64_t val
    double t
    int32_t aux
    int32_t used

ctypedef struct HTab:
    HEnt *e
    uint64_t cap
    Py_ssize_t n


cdef inline uint64_t _mix64(uint64_t x) noexcept nogil:
    x ^= x >> 30
    x *= 0xBF58476D1CE4E5B9ULL
    x ^= x >> 27
    x *= 0x94D049BB133111EBULL
    x ^= x >> 31
    return x


cdef inline HEnt *_ht_find(HTab *h, uint64_t key) noexcept nogil:
    cdef uint64_t i, mask
    cdef HEnt *e
    if h.cap == 0:
        return NULL
    mask = h.cap - 1
    i = _mix64(key) & mask
    while True:
        e = &h.e[i]
        if not e.used:
            return NULL
        if e.key == key:
            return e
        i = (i + 1) & mask


cdef int _ht_resize(HTab *h, uint64_t newcap) except -1:
    cdef HEnt *old = h.e
    cdef uint64_t oldcap = h.cap, i, j, mask = newcap - 1
    cdef HEnt *e = <HEnt *>malloc(newcap * sizeof(HEnt))
    if e == NULL:
        raise MemoryError()
    memset(e, 0, newcap * sizeof(HEnt))
    for i in range(oldcap):
        if old[i].used:
            j = _mix64(old[i].key) & mask
            while e[j].used:
                j = (j + 1) & mask
            e[j] = old[i]
    free(old)
    h.e = e
    h.cap = newcap
    return 0


cdef HEnt *_ht_add(HTab *h, uint64_t key) except NULL:
    """Add an absent key; returns its zeroed entry (used=1)."""
    cdef uint64_t i, mask
    if <uint64_t>(h.n + 1) * 4 > h.cap * 3:
        _ht_resize(h, h.cap * 2 if h.cap else 8)
    mask = h.cap - 1
    i = _mix64(key) & mask
    while h.e[i].used:
        i = (i + 1) & mask
    h.e[i].key = key
    h.e[i].val = 0
    h.e[i].t = 0.0
    h.e[i].aux = 0
    h.e[i].used = 1
    h.n += 1
    return &h.e[i]


cdef int _ht_del(HTab *h, HEnt *ent) except -1:
    cdef uint64_t mask = h.cap - 1
    cdef uint64_t i = ent - h.e, j = i, k
    while True:
        j = (j + 1) & mask
        if not h.e[j].used:
            break
        k = _mix64(h.e[j].key) & mask
        if (i <= j and (i < k <= j)) or (i > j and (k > i or k <= j)):
            continue
        h.e[i] = h.e[j]
        i = j
    h.e[i].used = 0
    h.n -= 1
    if h.cap > 8 and <uint64_t>h.n * 8 < h.cap:
        _ht_resize(h, h.cap // 2)
    return 0


cdef void _ht_clear(HTab *h) noexcept:
    free(h.e)
    h.e = NULL
    h.cap = 0
    h.n = 0


cdef class FdbTable:
    """Bridge forwarding database: (mac, vlan) -> port with Linux-style ageing.

    Dynamic entries older than ageing_time (now - updated > ageing_time) are
    invisible to lookups/entries but stay stored until expire() (or a learn,
    which treats them as new).  Static entries never age or move.
    """

    cdef HTab h
    cdef double _ageing

    def __cinit__(self, double ageing_time=300.0):
        if not (ageing_time >= 0.0):
            raise ValueError("ageing_time must be >= 0")
        self._ageing = ageing_time
        self.h.e = NULL
        self.h.cap = 0
        self.h.n = 0

    def __dealloc__(self):
        _ht_clear(&self.h)

    @property
    def ageing_time(self):
        """Seconds after which a dynamic entry is considered gone."""
        return self._ageing

    @ageing_time.setter
    def ageing_time(self, double value):
        if not (value >= 0.0):
            raise ValueError("ageing_time must be >= 0")
        self._ageing = value

    cdef inline uint64_t _key(self, uint64_t mac, uint32_t vlan) except? 0xFFFFFFFFFFFFFFFF:
        if mac >> 48:
            raise ValueError("mac must be a 48-bit value")
        if vlan > 4095:
            raise ValueError("vlan must be in 0..4095")
        return (mac << 12) | vlan

    def learn(self, uint64_t mac, uint32_t vlan, int64_t port, double now):
        """Learn mac on port: 0 refreshed/unchanged (or static), 1 new, 2 moved."""
        cdef uint64_t key = self._key(mac, vlan)
        cdef HEnt *e = _ht_find(&self.h, key)
        if e == NULL:
            e = _ht_add(&self.h, key)
            e.val = port
            e.t = now
            return 1
        if e.aux:
            return 0
        if now - e.t > self._ageing:
            e.val = port
            e.t = now
            return 1
        e.t = now
        if e.val != port:
            e.val = port
            return 2
        return 0

    def add_static(self, uint64_t mac, uint32_t vlan, int64_t port):
        """Add (or convert to) a permanent entry."""
        cdef uint64_t key = self._key(mac, vlan)
        cdef HEnt *e = _ht_find(&self.h, key)
        if e == NULL:
            e = _ht_add(&self.h, key)
        e.val = port
        e.aux = 1
        e.t = 0.0

    def remove(self, uint64_t mac, uint32_t vlan):
        """Delete an entry (static or not); True if it existed."""
        cdef HEnt *e = _ht_find(&self.h, self._key(mac, vlan))
        if e == NULL:
            return False
        _ht_del(&self.h, e)
        return True

    def lookup(self, uint64_t mac, uint32_t vlan, double now):
        """Port for (mac, vlan), or -1 if absent or aged out."""
        cdef HEnt *e = _ht_find(&self.h, self._key(mac, vlan))
        if e == NULL or (not e.aux and now - e.t > self._ageing):
            return -1
        return e.val

    def lookup_batch(self, macs, uint32_t vlan, double now):
        """Ports for a buffer of uint64 MACs on one vlan; array('q'), -1 = miss."""
        cdef object mv = _words(macs, 8)
        cdef Py_buffer view
        cdef const uint8_t *p
        cdef Py_ssize_t nbytes, i, n
        cdef uint64_t m
        cdef HEnt *e
        cdef double age = self._ageing
        cdef int rel
        cdef array.array out
        cdef int64_t *o
        if vlan > 4095:
            raise ValueError("vlan must be in 0..4095")
        rel = _get_ro(mv, &view, &p, &nbytes)
        try:
            n = nbytes // 8
            out = array.clone(_Q_TEMPLATE, n, False)
            o = <int64_t *>out.data.as_longlongs
            for i in range(n):
                memcpy(&m, p + 8 * i, 8)
                o[i] = -1
                if m >> 48:
                    continue
                e = _ht_find(&self.h, (m << 12) | vlan)
                if e != NULL and (e.aux or not (now - e.t > age)):
                    o[i] = e.val
        finally:
            if rel:
                PyBuffer_Release(&view)
        return out

    def expire(self, double now):
        """Remove aged dynamic entries; returns their (mac, vlan, port) sorted."""
        cdef list gone = []
        cdef uint64_t i
        cdef HEnt *e
        for i in range(self.h.cap):
            e = &self.h.e[i]
            if e.used and not e.aux and now - e.t > self._ageing:
                gone.append((e.key >> 12, e.key & 0xFFF, e.val))
        gone.sort()
        for mac, vlan, _ in gone:
            _ht_del(&self.h, _ht_find(&self.h, (<uint64_t>mac << 12) | <uint64_t>vlan))
        return gone

    def flush_port(self, int64_t port):
        """Remove all dynamic entries on port (aged or not); returns the count."""
        cdef list keys = []
        cdef uint64_t i, k
        cdef HEnt *e
        for i in range(self.h.cap):
            e = &self.h.e[i]
            if e.used and not e.aux and e.val == port:
                keys.append(e.key)
        for k in keys:
            _ht_del(&self.h, _ht_find(&self.h, k))
        return len(keys)

    def entries(self, double now):
        """Live entries (mac, vlan, port, is_static, updated) sorted by (mac, vlan)."""
        cdef list out = []
        cdef uint64_t i
        cdef HEnt *e
        for i in range(self.h.cap):
            e = &self.h.e[i]
            if not e.used:
                continue
            if e.aux:
                out.append((e.key >> 12, e.key & 0xFFF, e.val, True, 0.0))
            elif not (now - e.t > self._ageing):
                out.append((e.key >> 12, e.key & 0xFFF, e.val, False, e.t))
        out.sort()
        return out

    def __len__(self):
        """Stored entries, including aged ones not yet expired."""
        return self.h.n

    def memory_bytes(self):
        """Bytes of the object and its hash array."""
        return type(self).__basicsize__ + self.h.cap * sizeof(HEnt)


cdef class NeighTable:
    """Per-interface IPv4 neighbour records: ip -> (mac or -1, state, updated)."""

    cdef HTab h

    def __cinit__(self):
        self.h.e = NULL
        self.h.cap = 0
        self.h.n = 0

    def __dealloc__(self):
        _ht_clear(&self.h)

    def set(self, ip, mac, state, double updated):
        """Create or overwrite the record for ip."""
        cdef HEnt *e
        ip = PyNumber_Index(ip)
        mac = PyNumber_Index(mac)
        state = PyNumber_Index(state)
        if not (0 <= ip <= 0xFFFFFFFF):
            raise ValueError("ip out of range")
        if not (-1 <= mac <= 0xFFFFFFFFFFFF):
            raise ValueError("mac must be -1 or a 48-bit value")
        if not (-0x80000000 <= state <= 0x7FFFFFFF):
            raise ValueError("state must fit in int32")
        e = _ht_find(&self.h, <uint64_t>ip)
        if e == NULL:
            e = _ht_add(&self.h, <uint64_t>ip)
        e.val = mac
        e.aux = state
        e.t = updated

    def get(self, uint32_t ip):
        """(mac, state, updated) for ip, or None."""
        cdef HEnt *e = _ht_find(&self.h, ip)
        if e == NULL:
            return None
        return (e.val, e.aux, e.t)

    def remove(self, uint32_t ip):
        """Delete the record for ip; True if it existed."""
        cdef HEnt *e = _ht_find(&self.h, ip)
        if e == NULL:
            return False
        _ht_del(&self.h, e)
        return True

    def items(self):
        """All (ip, mac, state, updated) sorted by ip."""
        cdef list out = []
        cdef uint64_t i
        cdef HEnt *e
        for i in range(self.h.cap):
            e = &self.h.e[i]
            if e.used:
                out.append((e.key, e.val, e.aux, e.t))
        out.sort()
        return out

    def lookup_batch(self, ips):
        """MAC for each uint32 ip in a buffer; array('q'), -1 = none."""
        cdef object mv = _words(ips, 4)
        cdef Py_buffer view
        cdef const uint8_t *p
        cdef Py_ssize_t nbytes, i, n
        cdef uint32_t a
        cdef HEnt *e
        cdef int rel = _get_ro(mv, &view, &p, &nbytes)
        cdef array.array out
        cdef int64_t *o
        try:
            n = nbytes // 4
            out = array.clone(_Q_TEMPLATE, n, False)
            o = <int64_t *>out.data.as_longlongs
            for i in range(n):
                memcpy(&a, p + 4 * i, 4)
                e = _ht_find(&self.h, a)
                o[i] = e.val if e != NULL else -1
        finally:
            if rel:
                PyBuffer_Release(&view)
        return out

    def __len__(self):
        return self.h.n

    def memory_bytes(self):
        """Bytes of the object and its hash array."""
        return type(self).__basicsize__ + self.h.cap * sizeof(HEnt)


# --------------------------------------------------------------------------
# Checksums and header rewriting
# --------------------------------------------------------------------------

def inet_checksum(data, Py_ssize_t off=0, Py_ssize_t length=-1):
    """RFC 1071 checksum (complemented one's complement sum) of data[off:off+length]."""
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef Py_ssize_t n
    cdef int rel = _get_ro(data, &view, &p, &n)
    cdef uint32_t r
    try:
        if off < 0 or off > n:
            raise ValueError("offset out of range")
        if length == -1:
            length = n - off
        elif length < 0 or off + length > n:
            raise ValueError("length out of range")
        r = (~_fold(_inet_acc(p + off, length, 0))) & 0xFFFF
    finally:
        if rel:
            PyBuffer_Release(&view)
    return r


cdef int _ip_hdr(const uint8_t *p, Py_ssize_t n, Py_ssize_t off) noexcept:
    """IHL in bytes if a plausible IPv4 header starts at off, else 0."""
    cdef int ihl
    if off < 0 or n - off < 20 or (p[off] >> 4) != 4:
        return 0
    ihl = (p[off] & 15) * 4
    if ihl < 20 or n - off < ihl:
        return 0
    return ihl


def ipv4_header_checksum_ok(data, Py_ssize_t off=14):
    """True when an IPv4 header at off is present and its checksum verifies."""
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef Py_ssize_t n
    cdef int ihl
    cdef bint ok
    cdef int rel = _get_ro(data, &view, &p, &n)
    try:
        ihl = _ip_hdr(p, n, off)
        ok = ihl != 0 and _fold(_inet_acc(p + off, ihl, 0)) == 0xFFFF
    finally:
        if rel:
            PyBuffer_Release(&view)
    return ok


cdef object _parse(const uint8_t *p, Py_ssize_t n, Py_ssize_t off):
    cdef int ihl, typ
    cdef uint32_t tot, frag, sport = 0, dport = 0
    cdef Py_ssize_t l4, l4len
    cdef uint8_t proto
    if n - off < 20 or (p[off] >> 4) != 4:
        return None
    ihl = (p[off] & 15) * 4
    if ihl < 20:
        return None
    tot = _rd16(p + off + 2)
    if tot < <uint32_t>ihl or off + tot > n:
        return None
    frag = _rd16(p + off + 6)
    proto = p[off + 9]
    if (frag & 0x1FFF) == 0:
        l4 = off + ihl
        l4len = tot - ihl
        if proto == 6 or proto == 17:
            if l4len >= 4:
                sport = _rd16(p + l4)
                dport = _rd16(p + l4 + 2)
        elif proto == 1:
            if l4len >= 2:
                typ = p[l4]
                dport = (typ << 8) | p[l4 + 1]
                if (typ == 0 or typ == 8) and l4len >= 6:
                    sport = _rd16(p + l4 + 4)
    return (_rd32(p + off + 12), _rd32(p + off + 16), proto, sport, dport,
            p[off + 8], ihl, tot, frag)


def parse_flow(frame, Py_ssize_t off=14):
    """(src, dst, proto, sport, dport, ttl, ihl_bytes, total_length, frag_field) or None."""
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef Py_ssize_t n
    cdef int rel
    if off < 0:
        raise ValueError("negative offset")
    rel = _get_ro(frame, &view, &p, &n)
    try:
        return _parse(p, n, off)
    finally:
        if rel:
            PyBuffer_Release(&view)


def parse_flow_batch(frames, Py_ssize_t off=14):
    """parse_flow over a sequence of frames; list of tuples/None."""
    cdef list out = []
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef Py_ssize_t n
    cdef int rel
    if off < 0:
        raise ValueError("negative offset")
    for f in frames:
        rel = _get_ro(f, &view, &p, &n)
        try:
            out.append(_parse(p, n, off))
        finally:
            if rel:
                PyBuffer_Release(&view)
    return out


def ttl_decrement(buf, Py_ssize_t off=14):
    """Decrement the IPv4 TTL in place, patching the header checksum; returns new TTL."""
    cdef Py_buffer view
    cdef uint8_t *p
    cdef Py_ssize_t n
    cdef int rel = _get_rw(buf, &view, &p, &n)
    try:
        if _ip_hdr(p, n, off) == 0:
            raise ValueError("no IPv4 header at offset")
        if p[off + 8] == 0:
            raise ValueError("TTL is already 0")
        _ttl_dec(p + off)
        return p[off + 8]
    finally:
        if rel:
            PyBuffer_Release(&view)


cdef inline void _ttl_dec(uint8_t *h) noexcept nogil:
    """TTL - 1 with the header checksum patched (RFC 1624); h is the IPv4 header."""
    cdef uint32_t old = _rd16(h + 8)
    h[8] -= 1
    _csum_fix(h + 10, _neg16(old), _rd16(h + 8), False)


cdef inline void _stamp_id(uint8_t *h, uint32_t ident) noexcept nogil:
    """Sets the IPv4 identification of header h, patching its checksum."""
    _csum_fix(h + 10, _neg16(_rd16(h + 4)), ident & 0xFFFF, False)
    _wr16(h + 4, ident & 0xFFFF)


def stamp_frames(template, Py_ssize_t count, uint32_t first_ip_id):
    """`count` copies of an Ethernet/IPv4 `template` back to back, copy i with IP ID first_ip_id + i
    (mod 2**16) and its header checksum patched (the UDP/TCP checksum does not cover the ID)."""
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef Py_ssize_t n, i
    cdef uint8_t *o
    cdef bytearray out
    cdef int rel = _get_ro(template, &view, &p, &n)
    try:
        if n < 34 or p[12] != 0x08 or p[13] != 0 or (p[14] >> 4) != 4:
            raise ValueError("template must be an Ethernet frame carrying an IPv4 header")
        if count < 0:
            raise ValueError("count must be >= 0")
        out = bytearray(n * count)
        o = <uint8_t *>PyByteArray_AS_STRING(out)
        for i in range(count):
            memcpy(o + i * n, p, n)
            _stamp_id(o + i * n + 14, first_ip_id + <uint32_t>i)
    finally:
        if rel:
            PyBuffer_Release(&view)
    return out


def csum_replace4(buf, Py_ssize_t csum_off, uint32_t old, uint32_t new, bint udp=False):
    """Patch the 16-bit checksum at csum_off for a 32-bit word changing old -> new."""
    cdef Py_buffer view
    cdef uint8_t *p
    cdef Py_ssize_t n
    cdef int rel = _get_rw(buf, &view, &p, &n)
    try:
        if csum_off < 0 or csum_off + 2 > n:
            raise ValueError("checksum offset out of range")
        _csum_fix(p + csum_off, _neg32(old), _pos32(new), udp)
    finally:
        if rel:
            PyBuffer_Release(&view)


def csum_replace2(buf, Py_ssize_t csum_off, uint16_t old, uint16_t new, bint udp=False):
    """Patch the 16-bit checksum at csum_off for a 16-bit word changing old -> new."""
    cdef Py_buffer view
    cdef uint8_t *p
    cdef Py_ssize_t n
    cdef int rel = _get_rw(buf, &view, &p, &n)
    try:
        if csum_off < 0 or csum_off + 2 > n:
            raise ValueError("checksum offset out of range")
        _csum_fix(p + csum_off, _neg16(old), new, udp)
    finally:
        if rel:
            PyBuffer_Release(&view)


def set_ipv4_addr(buf, Py_ssize_t off, int which, uint32_t new_addr):
    """Rewrite src (which=0) or dst (1) address, fixing IP and TCP/UDP checksums."""
    cdef Py_buffer view
    cdef uint8_t *p
    cdef Py_ssize_t n
    cdef int rel
    if which != 0 and which != 1:
        raise ValueError("which must be 0 (source) or 1 (destination)")
    rel = _get_rw(buf, &view, &p, &n)
    try:
        _set_addr(p, n, off, which, new_addr)
    finally:
        if rel:
            PyBuffer_Release(&view)


cdef int _set_addr(uint8_t *p, Py_ssize_t n, Py_ssize_t off, int which, uint32_t new_addr) except -1:
    """set_ipv4_addr on a raw buffer (the flow cache calls it per frame)."""
    cdef Py_ssize_t end, l4
    cdef uint32_t old
    cdef uint8_t proto
    cdef int ihl = _ip_hdr(p, n, off)
    if ihl == 0:
        raise ValueError("no IPv4 header at offset")
    old = _rd32(p + off + 12 + 4 * which)
    _wr32(p + off + 12 + 4 * which, new_addr)
    _csum_fix(p + off + 10, _neg32(old), _pos32(new_addr), False)
    if _rd16(p + off + 6) & 0x1FFF:
        return 0
    end = off + _rd16(p + off + 2)
    if end > n:
        end = n
    l4 = off + ihl
    proto = p[off + 9]
    if proto == 6 and l4 + 18 <= end:
        _csum_fix(p + l4 + 16, _neg32(old), _pos32(new_addr), False)
    elif proto == 17 and l4 + 8 <= end:
        _csum_fix(p + l4 + 6, _neg32(old), _pos32(new_addr), True)
    return 0


def set_l4_port(buf, Py_ssize_t off, int which, uint16_t new_port):
    """Rewrite TCP/UDP sport (0)/dport (1) or the ICMP echo id (0), fixing the L4 checksum."""
    cdef Py_buffer view
    cdef uint8_t *p
    cdef Py_ssize_t n
    cdef int rel
    if which != 0 and which != 1:
        raise ValueError("which must be 0 (source) or 1 (destination)")
    rel = _get_rw(buf, &view, &p, &n)
    try:
        _set_port(p, n, off, which, new_port)
    finally:
        if rel:
            PyBuffer_Release(&view)


cdef int _set_port(uint8_t *p, Py_ssize_t n, Py_ssize_t off, int which, uint16_t new_port) except -1:
    """set_l4_port on a raw buffer (the flow cache calls it per frame)."""
    cdef Py_ssize_t end, l4
    cdef uint32_t old
    cdef uint8_t proto
    cdef int ihl = _ip_hdr(p, n, off)
    if ihl == 0:
        raise ValueError("no IPv4 header at offset")
    if _rd16(p + off + 6) & 0x1FFF:
        raise ValueError("non-first fragment has no L4 header")
    end = off + _rd16(p + off + 2)
    if end > n:
        end = n
    l4 = off + ihl
    proto = p[off + 9]
    if proto == 6 or proto == 17:
        if l4 + (18 if proto == 6 else 8) > end:
            raise ValueError("truncated L4 header")
        old = _rd16(p + l4 + 2 * which)
        _wr16(p + l4 + 2 * which, new_port)
        _csum_fix(p + l4 + (16 if proto == 6 else 6), _neg16(old), new_port, proto == 17)
    elif proto == 1:
        if which != 0:
            raise ValueError("ICMP has only an identifier (which=0)")
        if l4 + 8 > end or (p[l4] != 0 and p[l4] != 8):
            raise ValueError("not an ICMP echo request/reply")
        old = _rd16(p + l4 + 4)
        _wr16(p + l4 + 4, new_port)
        _csum_fix(p + l4 + 2, _neg16(old), new_port, False)
    else:
        raise ValueError(f"protocol {proto} has no ports")
    return 0


cdef void _fill_ip(uint8_t *h, uint32_t total_length, uint32_t ident, uint32_t flags_frag,
                   uint32_t ttl, uint32_t proto, uint32_t src, uint32_t dst,
                   uint32_t tos) noexcept nogil:
    h[0] = 0x45
    h[1] = tos
    _wr16(h + 2, total_length)
    _wr16(h + 4, ident)
    _wr16(h + 6, flags_frag)
    h[8] = ttl
    h[9] = proto
    h[10] = 0
    h[11] = 0
    _wr32(h + 12, src)
    _wr32(h + 16, dst)
    _wr16(h + 10, (~_fold(_inet_acc(h, 20, 0))) & 0xFFFF)


def ipv4_build_header(uint16_t total_length, uint16_t ident, uint16_t flags_frag, uint8_t ttl,
                      uint8_t proto, uint32_t src, uint32_t dst, uint8_t tos=0):
    """20-byte IPv4 header (no options) with a correct checksum."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 20)
    _fill_ip(<uint8_t *>PyBytes_AS_STRING(out), total_length, ident, flags_frag, ttl, proto,
             src, dst, tos)
    return out


cdef inline uint64_t _pseudo(uint32_t src, uint32_t dst, uint32_t proto, uint32_t length) noexcept nogil:
    return _pos32(src) + _pos32(dst) + proto + length


def udp_checksum(uint32_t src, uint32_t dst, udp_segment):
    """UDP checksum over pseudo header + segment (its checksum field read as 0); 0 -> 0xFFFF."""
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef Py_ssize_t n
    cdef uint64_t acc
    cdef uint32_t c
    cdef int rel = _get_ro(udp_segment, &view, &p, &n)
    try:
        if n < 8 or n > 0xFFFF:
            raise ValueError("UDP segment must be 8..65535 bytes")
        acc = _inet_acc(p, n, _pseudo(src, dst, 17, <uint32_t>n)) - _rd16(p + 6)
        # subtracting the stored field keeps acc >= 0: it was added above
        c = (~_fold(acc)) & 0xFFFF
    finally:
        if rel:
            PyBuffer_Release(&view)
    return c if c else 0xFFFF


def vxlan_encap(inner_frame, uint64_t outer_src_mac, uint64_t outer_dst_mac, uint32_t src_ip,
                uint32_t dst_ip, uint16_t sport, uint16_t dport, uint32_t vni, uint16_t ident,
                uint8_t ttl=64):
    """Outer Ethernet + IPv4 + UDP (checksummed) + VXLAN header around inner_frame."""
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef Py_ssize_t n
    cdef bytes out
    cdef uint8_t *o
    cdef int rel
    if outer_src_mac >> 48 or outer_dst_mac >> 48:
        raise ValueError("MACs must be 48-bit values")
    if vni >> 24:
        raise ValueError("vni must be a 24-bit value")
    rel = _get_ro(inner_frame, &view, &p, &n)
    try:
        if n + 36 > 0xFFFF:
            raise ValueError("inner frame too large")
        out = PyBytes_FromStringAndSize(NULL, 14 + 36 + n)
        o = <uint8_t *>PyBytes_AS_STRING(out)
        _wr48(o, outer_dst_mac)
        _wr48(o + 6, outer_src_mac)
        o[12] = 0x08
        o[13] = 0x00
        memcpy(o + 50, p, n)
        _vxlan_hdr(o + 14, <uint32_t>n, src_ip, dst_ip, sport, dport, vni, ident, ttl)
    finally:
        if rel:
            PyBuffer_Release(&view)
    return out


cdef void _vxlan_hdr(uint8_t *h, uint32_t inner_len, uint32_t src_ip, uint32_t dst_ip, uint32_t sport,
                     uint32_t dport, uint32_t vni, uint32_t ident, uint32_t ttl) noexcept nogil:
    """Writes IPv4 + UDP (checksummed over the inner frame that follows at h + 36) + VXLAN headers at h."""
    cdef uint32_t ulen = inner_len + 16, c
    cdef uint8_t *u = h + 20
    _fill_ip(h, 20 + ulen, ident, 0, ttl, 17, src_ip, dst_ip, 0)
    _wr16(u, sport)
    _wr16(u + 2, dport)
    _wr16(u + 4, ulen)
    _wr16(u + 6, 0)
    _wr32(u + 8, 0x08000000)
    _wr32(u + 12, vni << 8)
    c = (~_fold(_inet_acc(u, ulen, _pseudo(src_ip, dst_ip, 17, ulen)))) & 0xFFFF
    _wr16(u + 6, c if c else 0xFFFF)


def vxlan_decap(frame, Py_ssize_t off=14):
    """(vni, inner_frame_offset) for an unfragmented IPv4/UDP/VXLAN packet at off, else None."""
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef Py_ssize_t n, l4
    cdef int ihl
    cdef uint32_t tot, ulen
    cdef int rel
    if off < 0:
        raise ValueError("negative offset")
    rel = _get_ro(frame, &view, &p, &n)
    try:
        ihl = _ip_hdr(p, n, off)
        if ihl == 0 or p[off + 9] != 17 or (_rd16(p + off + 6) & 0x3FFF):
            return None
        tot = _rd16(p + off + 2)
        if tot < <uint32_t>ihl + 30 or off + tot > n:
            return None
        l4 = off + ihl
        ulen = _rd16(p + l4 + 4)
        if ulen < 30 or ulen > tot - ihl or not (p[l4 + 8] & 0x08):
            return None
        return (_rd32(p + l4 + 12) >> 8, l4 + 16)
    finally:
        if rel:
            PyBuffer_Release(&view)


def ipip_encap(inner_ip_packet, uint32_t src_ip, uint32_t dst_ip, uint16_t ident, uint8_t ttl=64,
               uint8_t tos=0, int df=-1):
    """Outer IPv4 header (proto 4) + inner packet; DF copied from inner unless df is 0/1."""
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef Py_ssize_t n
    cdef bytes out
    cdef uint8_t *o
    cdef uint32_t flags
    cdef int rel = _get_ro(inner_ip_packet, &view, &p, &n)
    try:
        if n < 20 or (p[0] >> 4) != 4:
            raise ValueError("inner packet is not IPv4")
        if n + 20 > 0xFFFF:
            raise ValueError("inner packet too large")
        if df < 0:
            flags = _rd16(p + 6) & 0x4000
        else:
            flags = 0x4000 if df else 0
        out = PyBytes_FromStringAndSize(NULL, n + 20)
        o = <uint8_t *>PyBytes_AS_STRING(out)
        _fill_ip(o, <uint32_t>(n + 20), ident, flags, ttl, 4, src_ip, dst_ip, tos)
        memcpy(o + 20, p, n)
    finally:
        if rel:
            PyBuffer_Release(&view)
    return out


# --------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------

cdef inline uint32_t _rol32(uint32_t x, int k) noexcept nogil:
    return (x << k) | (x >> (32 - k))


cdef uint32_t _jhash4(uint32_t k0, uint32_t k1, uint32_t k2, uint32_t k3, uint32_t initval) noexcept nogil:
    """Linux jhash2() over four 32-bit words."""
    cdef uint32_t a, b, c
    a = b = c = <uint32_t>(0xDEADBEEFU + 16U + initval)
    a += k0
    b += k1
    c += k2
    a -= c; a ^= _rol32(c, 4); c += b
    b -= a; b ^= _rol32(a, 6); a += c
    c -= b; c ^= _rol32(b, 8); b += a
    a -= c; a ^= _rol32(c, 16); c += b
    b -= a; b ^= _rol32(a, 19); a += c
    c -= b; c ^= _rol32(b, 4); b += a
    a += k3
    c ^= b; c -= _rol32(b, 14)
    a ^= c; a -= _rol32(c, 11)
    b ^= a; b -= _rol32(a, 25)
    c ^= b; c -= _rol32(b, 16)
    a ^= c; a -= _rol32(c, 4)
    b ^= a; b -= _rol32(a, 14)
    c ^= b; c -= _rol32(b, 24)
    return c


def flow_hash(uint32_t src, uint32_t dst, uint8_t proto, uint16_t sport, uint16_t dport, seed):
    """Direction-independent 32-bit jhash of a 5-tuple (endpoints sorted first)."""
    cdef uint32_t s = <uint32_t>(PyNumber_Index(seed) & 0xFFFFFFFF)
    if src > dst or (src == dst and sport > dport):
        src, dst = dst, src
        sport, dport = dport, sport
    return _jhash4(src, dst, ((<uint32_t>sport) << 16) | dport, proto, s)


def vxlan_source_port(uint32_t hash32, uint16_t low=32768, uint16_t high=60999):
    """Linux udp_flow_src_port(): scale a 32-bit hash into [low, high)."""
    if high < low:
        raise ValueError("high must be >= low")
    return <uint32_t>(((<uint64_t>hash32) * (high - low)) >> 32) + low


# --------------------------------------------------------------------------
# Connection tracking: entries reachable by their original and reply tuples
# --------------------------------------------------------------------------

cimport cython
from libc.math cimport INFINITY
from libc.stdlib cimport qsort

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define EMU_PREFETCH(p) __builtin_prefetch((const void *)(p))
    #else
    #define EMU_PREFETCH(p) ((void)(p))
    #endif
    #define EMU_CT_EMPTY 0xFFFFFFFFu
    #define EMU_CT_DEAD 0xFFFFFFFFu
    #define EMU_CT_MAX_IDS 0x7FFFFFFFu
    #define EMU_CT_SEED 0x6374726bu

    static int emu_cmp_u32(const void *a, const void *b) {
        unsigned int x = *(const unsigned int *)a, y = *(const unsigned int *)b;
        return (x > y) - (x < y);
    }
    """
    void EMU_PREFETCH(const void *p) noexcept nogil
    uint32_t EMU_CT_EMPTY
    uint32_t EMU_CT_DEAD
    uint32_t EMU_CT_MAX_IDS
    uint32_t EMU_CT_SEED
    int emu_cmp_u32(const void *a, const void *b) noexcept nogil

ctypedef struct CtSlot:
    uint32_t k[4]       # the tuple as its 16-byte record (=IIHHB3x, pad bytes zero)
    uint32_t ref        # id * 2 + direction; EMU_CT_EMPTY for a free slot

ctypedef struct CtEnt:
    uint32_t ko[4]      # original-direction tuple record
    uint32_t kr[4]      # reply-direction tuple record
    double expires
    uint64_t pkts[2]    # per direction
    uint64_t nbytes[2]
    int32_t state
    uint32_t status
    uint32_t mark
    uint32_t hpos       # position in the expiry heap; EMU_CT_DEAD when the id is free

ctypedef struct CtHeapItem:
    double key          # a lower bound of the entry's expires (raised lazily)
    uint32_t id

cdef enum:
    CT_MIN_SLOTS = 16
    CT_MIN_ENTS = 16
    CT_PREFETCH = 8     # find_batch hashes this many keys ahead and prefetches their slots

cdef tuple _CT_MISS = (-1, 0)


cdef inline void _ct_pack(uint32_t *k, uint32_t src, uint32_t dst, uint32_t proto, uint16_t sport,
                          uint16_t dport) noexcept nogil:
    """Write the native =IIHHB3x record of a tuple (pad zeroed) into k."""
    cdef uint8_t *b = <uint8_t *>k
    k[0] = src
    k[1] = dst
    memcpy(b + 8, &sport, 2)
    memcpy(b + 10, &dport, 2)
    k[3] = 0
    b[12] = <uint8_t>proto


cdef inline void _ct_load(uint32_t *k, const uint8_t *rec) noexcept nogil:
    """Copy a 16-byte record, ignoring its 3 pad bytes."""
    cdef uint8_t *b = <uint8_t *>k
    memcpy(k, rec, 16)
    b[13] = 0
    b[14] = 0
    b[15] = 0


cdef inline bint _ct_eq(const uint32_t *a, const uint32_t *b) noexcept nogil:
    return a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and a[3] == b[3]


cdef inline uint32_t _ct_hash(const uint32_t *k) noexcept nogil:
    return _jhash4(k[0], k[1], k[2], k[3], EMU_CT_SEED)


cdef inline int64_t _ct_int(object x) except? -1:
    """x as an int64 the way operator.index() takes it: TypeError for floats (no silent
    truncation of a port or an id), OverflowError beyond int64.  The twin's _cs(x, 64)."""
    cdef int64_t v
    if type(x) is not int:
        x = PyNumber_Index(x)
    v = x
    return v


cdef int _ct_key(object t, uint32_t *k) except -1:
    """Validate a (src, dst, proto, sport, dport) tuple and write its record into k.

    Each field converts with _ct_int, then ValueError outside its own range.
    """
    cdef int64_t src, dst, proto, sport, dport
    o_src, o_dst, o_proto, o_sport, o_dport = t
    src = _ct_int(o_src)
    dst = _ct_int(o_dst)
    proto = _ct_int(o_proto)
    sport = _ct_int(o_sport)
    dport = _ct_int(o_dport)
    if not (0 <= src <= 0xFFFFFFFF and 0 <= dst <= 0xFFFFFFFF):
        raise ValueError("tuple addresses must be in 0..2**32-1")
    if not (0 <= proto <= 0xFF):
        raise ValueError("tuple protocol must be in 0..255")
    if not (0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF):
        raise ValueError("tuple ports must be in 0..65535")
    _ct_pack(k, <uint32_t>src, <uint32_t>dst, <uint32_t>proto, <uint16_t>sport, <uint16_t>dport)
    return 0


cdef tuple _ct_tuple(const uint32_t *k):
    """The (src, dst, proto, sport, dport) tuple of a record."""
    cdef const uint8_t *b = <const uint8_t *>k
    cdef uint16_t sport, dport
    memcpy(&sport, b + 8, 2)
    memcpy(&dport, b + 10, 2)
    return (k[0], k[1], b[12], sport, dport)


cdef int _ct_check(int64_t state, int64_t status, double expires) except -1:
    """ValueError unless state fits int32, status uint32 and expires is not NaN (it orders the heap)."""
    if not (-0x80000000 <= state <= 0x7FFFFFFF):
        raise ValueError("state must fit in int32")
    if not (0 <= status <= 0xFFFFFFFF):
        raise ValueError("status must be in 0..2**32-1")
    if expires != expires:
        raise ValueError("expires must not be NaN")
    return 0


cdef uint64_t _ct_slot_cap(uint64_t n) noexcept nogil:
    """Smallest power-of-two slot count (>= CT_MIN_SLOTS) holding n keys at load <= 0.7."""
    cdef uint64_t cap = CT_MIN_SLOTS
    while n * 10 > cap * 7:
        cap *= 2
    return cap


def pack_tuples(tuples):
    """Pack (src, dst, proto, sport, dport) tuples into =IIHHB3x records for find_batch."""
    cdef list items = list(tuples)
    cdef Py_ssize_t i, n = len(items)
    cdef uint32_t k[4]
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 16 * n)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
    for i in range(n):
        _ct_key(items[i], k)
        memcpy(p + 16 * i, k, 16)
    return out


@cython.final
cdef class ConntrackTable:
    """Connection-tracking entries (as nf_conntrack keeps them), found by either direction's tuple.

    An entry holds its original and reply tuples (after NAT they differ in more than the
    swap), the caller's state/status/mark, an expiry time and per-direction packet/byte
    counters.  The state machine lives elsewhere; this table stores and finds.

    Storage: one open-addressing hash table (linear probing, backward-shift deletion,
    load <= 0.7) whose slots hold a tuple's 16-byte record and id*2+direction, so a lookup
    touches one slot array only; entries live in arrays indexed by id.  Expiry uses a
    binary min-heap with one item per entry whose key is a lower bound of the entry's
    expiry: pushing the expiry later (the per-packet refresh) is O(1), an item is fixed up
    only when it reaches the top.  Freed ids are reused last-freed-first; an empty table
    releases its storage and restarts ids at 0 (the twin does the same).
    """

    cdef CtSlot *slots
    cdef uint64_t scap
    cdef uint64_t sn
    cdef CtEnt *ents
    cdef CtHeapItem *heap
    cdef uint32_t *freel
    cdef uint32_t ecap
    cdef uint32_t hw        # ids below this have been handed out
    cdef uint32_t nheap
    cdef uint32_t nfree
    cdef Py_ssize_t count

    def __cinit__(self):
        self.slots = NULL
        self.ents = NULL
        self.heap = NULL
        self.freel = NULL
        self._reset()

    def __dealloc__(self):
        self._release()

    cdef void _reset(self) noexcept:
        self.scap = 0
        self.sn = 0
        self.ecap = 0
        self.hw = 0
        self.nheap = 0
        self.nfree = 0
        self.count = 0

    cdef void _release(self) noexcept:
        free(self.slots)
        free(self.ents)
        free(self.heap)
        free(self.freel)
        self.slots = NULL
        self.ents = NULL
        self.heap = NULL
        self.freel = NULL
        self._reset()

    # ---- hash slots ---------------------------------------------------------

    cdef inline int64_t _sfind(self, const uint32_t *k, uint32_t h) noexcept nogil:
        """Slot index holding record k (hash h), or -1."""
        cdef uint64_t mask, i
        cdef CtSlot *s
        if self.scap == 0:
            return -1
        mask = self.scap - 1
        i = h & mask
        while True:
            s = &self.slots[i]
            if s.ref == EMU_CT_EMPTY:
                return -1
            if _ct_eq(s.k, k):
                return <int64_t>i
            i = (i + 1) & mask

    cdef int _sresize(self, uint64_t newcap) noexcept:
        """Rehash into newcap slots; -1 (table unchanged) if the allocation fails."""
        cdef CtSlot *ns = <CtSlot *>malloc(newcap * sizeof(CtSlot))
        cdef uint64_t i, j, mask = newcap - 1
        if ns == NULL:
            return -1
        memset(ns, 0xFF, newcap * sizeof(CtSlot))
        for i in range(self.scap):
            if self.slots[i].ref != EMU_CT_EMPTY:
                j = _ct_hash(self.slots[i].k) & mask
                while ns[j].ref != EMU_CT_EMPTY:
                    j = (j + 1) & mask
                ns[j] = self.slots[i]
        free(self.slots)
        self.slots = ns
        self.scap = newcap
        return 0

    cdef int _sreserve(self, uint64_t extra) except -1:
        if (self.sn + extra) * 10 > self.scap * 7:
            if self._sresize(_ct_slot_cap(self.sn + extra)) < 0:
                raise MemoryError()
        return 0

    cdef void _sput(self, const uint32_t *k, uint32_t ref) noexcept nogil:
        """Insert an absent record (capacity already reserved)."""
        cdef uint64_t mask = self.scap - 1
        cdef uint64_t i = _ct_hash(k) & mask
        while self.slots[i].ref != EMU_CT_EMPTY:
            i = (i + 1) & mask
        memcpy(self.slots[i].k, k, 16)
        self.slots[i].ref = ref
        self.sn += 1

    cdef void _sdel(self, uint64_t i) noexcept nogil:
        """Empty slot i, shifting later members of its probe run back (no tombstones)."""
        cdef uint64_t mask = self.scap - 1
        cdef uint64_t j = i, home
        while True:
            j = (j + 1) & mask
            if self.slots[j].ref == EMU_CT_EMPTY:
                break
            home = _ct_hash(self.slots[j].k) & mask
            if (i <= j and (i < home <= j)) or (i > j and (home > i or home <= j)):
                continue
            self.slots[i] = self.slots[j]
            i = j
        self.slots[i].ref = EMU_CT_EMPTY
        self.sn -= 1

    # ---- entries and the expiry heap ----------------------------------------------

    cdef int _ereserve(self) except -1:
        """Room for one more id (grows the id-indexed arrays by 1.5x)."""
        cdef uint64_t newcap
        cdef void *p
        if self.nfree or self.hw < self.ecap:
            return 0
        if self.ecap >= EMU_CT_MAX_IDS:
            raise OverflowError("conntrack table is full")
        newcap = <uint64_t>self.ecap + (self.ecap >> 1)
        if newcap < CT_MIN_ENTS:
            newcap = CT_MIN_ENTS
        if newcap > EMU_CT_MAX_IDS:
            newcap = EMU_CT_MAX_IDS
        # each array is replaced as soon as it grew; ecap moves only when all three did
        p = realloc(self.ents, newcap * sizeof(CtEnt))
        if p == NULL:
            raise MemoryError()
        self.ents = <CtEnt *>p
        p = realloc(self.heap, newcap * sizeof(CtHeapItem))
        if p == NULL:
            raise MemoryError()
        self.heap = <CtHeapItem *>p
        p = realloc(self.freel, newcap * sizeof(uint32_t))
        if p == NULL:
            raise MemoryError()
        self.freel = <uint32_t *>p
        self.ecap = <uint32_t>newcap
        return 0

    cdef CtEnt *_ent(self, int64_t id) except NULL:
        if id < 0 or id >= self.hw or self.ents[id].hpos == EMU_CT_DEAD:
            raise KeyError(id)
        return &self.ents[id]

    cdef void _sift_up(self, uint32_t pos) noexcept nogil:
        cdef CtHeapItem it = self.heap[pos]
        cdef uint32_t parent
        while pos > 0:
            parent = (pos - 1) >> 1
            if not (it.key < self.heap[parent].key):
                break
            self.heap[pos] = self.heap[parent]
            self.ents[self.heap[pos].id].hpos = pos
            pos = parent
        self.heap[pos] = it
        self.ents[it.id].hpos = pos

    cdef void _sift_down(self, uint32_t pos) noexcept nogil:
        cdef CtHeapItem it = self.heap[pos]
        cdef uint32_t c, n = self.nheap
        while True:
            c = 2 * pos + 1
            if c >= n:
                break
            if c + 1 < n and self.heap[c + 1].key < self.heap[c].key:
                c += 1
            if not (self.heap[c].key < it.key):
                break
            self.heap[pos] = self.heap[c]
            self.ents[self.heap[pos].id].hpos = pos
            pos = c
        self.heap[pos] = it
        self.ents[it.id].hpos = pos

    cdef void _heap_remove(self, uint32_t pos) noexcept nogil:
        self.nheap -= 1
        if pos == self.nheap:
            return
        self.heap[pos] = self.heap[self.nheap]
        self.ents[self.heap[pos].id].hpos = pos
        if pos > 0 and self.heap[pos].key < self.heap[(pos - 1) >> 1].key:
            self._sift_up(pos)
        else:
            self._sift_down(pos)

    cdef bint _settle_top(self) noexcept nogil:
        """Raise the top item's key to its entry's expiry until they agree; False if empty."""
        cdef double exp
        while self.nheap:
            exp = self.ents[self.heap[0].id].expires
            if not (exp > self.heap[0].key):
                return True
            self.heap[0].key = exp
            self._sift_down(0)
        return False

    cdef void _unlink(self, uint32_t id) noexcept nogil:
        """Drop both tuples of a live entry (already out of the heap) and free its id."""
        cdef CtEnt *e = &self.ents[id]
        self._sdel(<uint64_t>self._sfind(e.ko, _ct_hash(e.ko)))
        self._sdel(<uint64_t>self._sfind(e.kr, _ct_hash(e.kr)))
        e.hpos = EMU_CT_DEAD
        self.freel[self.nfree] = id
        self.nfree += 1
        self.count -= 1

    cdef void _after_remove(self) noexcept:
        if self.count == 0:
            self._release()
        elif self.scap > CT_MIN_SLOTS and self.sn * 8 < self.scap:
            self._sresize(_ct_slot_cap(2 * self.sn))  # a failed shrink keeps the old table

    # ---- public API -----------------------------------------------------------

    def create(self, orig, reply, state, status, double expires, mark=0):
        """Add an entry; its new id, or -1 (nothing stored) when either tuple is already in use.

        Arguments convert in order (ints like operator.index, then ValueError for a value
        out of range): state int32, status and mark uint32, expires any float but NaN.
        """
        cdef uint32_t ko[4]
        cdef uint32_t kr[4]
        cdef uint32_t id, pos
        cdef int64_t st, ss, mk
        cdef CtEnt *e
        _ct_key(orig, ko)
        _ct_key(reply, kr)
        st = _ct_int(state)
        ss = _ct_int(status)
        mk = _ct_int(mark)
        _ct_check(st, ss, expires)
        if not (0 <= mk <= 0xFFFFFFFF):
            raise ValueError("mark must be in 0..2**32-1")
        if _ct_eq(ko, kr):
            raise ValueError("orig and reply tuples must differ")
        if self._sfind(ko, _ct_hash(ko)) >= 0 or self._sfind(kr, _ct_hash(kr)) >= 0:
            return -1
        self._sreserve(2)
        self._ereserve()
        if self.nfree:
            self.nfree -= 1
            id = self.freel[self.nfree]
        else:
            id = self.hw
            self.hw += 1
        e = &self.ents[id]
        memcpy(e.ko, ko, 16)
        memcpy(e.kr, kr, 16)
        e.expires = expires
        e.pkts[0] = e.pkts[1] = 0
        e.nbytes[0] = e.nbytes[1] = 0
        e.state = <int32_t>st
        e.status = <uint32_t>ss
        e.mark = <uint32_t>mk
        pos = self.nheap
        self.nheap += 1
        self.heap[pos].key = expires
        self.heap[pos].id = id
        self._sift_up(pos)
        self._sput(ko, 2 * id)
        self._sput(kr, 2 * id + 1)
        self.count += 1
        return id

    def find(self, t):
        """(id, direction) of the entry having tuple t (0 = original, 1 = reply), or (-1, 0).

        Expired entries are found until expire() removes them.
        """
        cdef uint32_t k[4]
        cdef int64_t i
        cdef uint32_t ref
        _ct_key(t, k)
        i = self._sfind(k, _ct_hash(k))
        if i < 0:
            return _CT_MISS
        ref = self.slots[i].ref
        return (ref >> 1, ref & 1)

    def in_use(self, t):
        """True when t is any entry's original or reply tuple (e.g. to pick a free NAT port)."""
        cdef uint32_t k[4]
        _ct_key(t, k)
        return self._sfind(k, _ct_hash(k)) >= 0

    def find_batch(self, keys):
        """id*2 + direction (or -1) for each 16-byte =IIHHB3x record in a buffer; array('q').

        Any C-contiguous buffer whose size is a multiple of 16 bytes is accepted; the
        3 pad bytes of a record are ignored.
        """
        cdef object mv
        cdef Py_buffer view
        cdef const uint8_t *p
        cdef Py_ssize_t nbytes, i, n
        cdef uint32_t k[4]
        cdef uint32_t hs[CT_PREFETCH]
        cdef uint32_t h
        cdef uint64_t mask, j
        cdef CtSlot *s
        cdef int rel
        cdef array.array out
        cdef int64_t *o
        if type(keys) is not bytes and type(keys) is not bytearray:
            mv = memoryview(keys)
            if not mv.c_contiguous:
                raise ValueError("buffer must be C-contiguous")
            keys = mv
        rel = _get_ro(keys, &view, &p, &nbytes)
        try:
            if nbytes % 16:
                raise ValueError("buffer length must be a multiple of 16 (=IIHHB3x records)")
            n = nbytes // 16
            out = array.clone(_Q_TEMPLATE, n, False)
            o = <int64_t *>out.data.as_longlongs
            if self.scap == 0:
                for i in range(n):
                    o[i] = -1
                return out
            mask = self.scap - 1
            for i in range(n if n < CT_PREFETCH else CT_PREFETCH):
                _ct_load(k, p + 16 * i)
                hs[i] = _ct_hash(k)
                EMU_PREFETCH(&self.slots[hs[i] & mask])
            for i in range(n):
                h = hs[i & (CT_PREFETCH - 1)]
                if i + CT_PREFETCH < n:
                    _ct_load(k, p + 16 * (i + CT_PREFETCH))
                    hs[i & (CT_PREFETCH - 1)] = _ct_hash(k)
                    EMU_PREFETCH(&self.slots[hs[i & (CT_PREFETCH - 1)] & mask])
                _ct_load(k, p + 16 * i)
                j = h & mask
                while True:
                    s = &self.slots[j]
                    if s.ref == EMU_CT_EMPTY:
                        o[i] = -1
                        break
                    if _ct_eq(s.k, k):
                        o[i] = s.ref
                        break
                    j = (j + 1) & mask
        finally:
            if rel:
                PyBuffer_Release(&view)
        return out

    def get(self, id):
        """(orig, reply, state, status, expires, mark, packets_orig, bytes_orig, packets_reply,
        bytes_reply) of an entry; KeyError for an unknown id."""
        cdef CtEnt *e = self._ent(_ct_int(id))
        return (_ct_tuple(e.ko), _ct_tuple(e.kr), e.state, e.status, e.expires, e.mark,
                e.pkts[0], e.nbytes[0], e.pkts[1], e.nbytes[1])

    def update(self, id, state, status, double expires):
        """Set an entry's state, status and expiry time; KeyError for an unknown id."""
        cdef CtEnt *e
        cdef int64_t i = _ct_int(id), st = _ct_int(state), ss = _ct_int(status)
        _ct_check(st, ss, expires)
        e = self._ent(i)
        e.state = <int32_t>st
        e.status = <uint32_t>ss
        e.expires = expires
        if expires < self.heap[e.hpos].key:
            self.heap[e.hpos].key = expires
            self._sift_up(e.hpos)

    def set_mark(self, id, mark):
        """Set an entry's 32-bit mark; KeyError for an unknown id."""
        cdef int64_t i = _ct_int(id), mk = _ct_int(mark)
        if not (0 <= mk <= 0xFFFFFFFF):
            raise ValueError("mark must be in 0..2**32-1")
        self._ent(i).mark = <uint32_t>mk

    def account(self, id, direction, nbytes):
        """Count one packet of nbytes in a direction (0 original, 1 reply); counters wrap at 2**64."""
        cdef CtEnt *e
        cdef int64_t i = _ct_int(id), d = _ct_int(direction), n = _ct_int(nbytes)
        if d != 0 and d != 1:
            raise ValueError("direction must be 0 (original) or 1 (reply)")
        if n < 0:
            raise ValueError("nbytes must be >= 0")
        e = self._ent(i)
        e.pkts[d] += 1
        e.nbytes[d] += <uint64_t>n

    def delete(self, id):
        """Remove an entry; True if it existed."""
        cdef int64_t i = _ct_int(id)
        if i < 0 or i >= self.hw or self.ents[i].hpos == EMU_CT_DEAD:
            return False
        self._heap_remove(self.ents[i].hpos)
        self._unlink(<uint32_t>i)
        self._after_remove()
        return True

    def expire(self, double now):
        """Remove every entry with expires <= now; their ids, ascending."""
        # The ids are collected, sorted and freed in the free-id stack's spare room (live +
        # free ids <= capacity): freeing pushes each id onto the very place it was read from,
        # so expiring allocates nothing until the result list.
        cdef uint32_t base = self.nfree, n = 0, i
        cdef list out
        while self._settle_top() and self.heap[0].key <= now:
            self.freel[base + n] = self.heap[0].id
            n += 1
            self._heap_remove(0)
        if n == 0:
            return []
        qsort(self.freel + base, n, sizeof(uint32_t), emu_cmp_u32)
        for i in range(n):
            self._unlink(self.freel[base + i])
        try:
            out = [self.freel[base + i] for i in range(n)]
        finally:
            self._after_remove()
        return out

    def next_expiry(self):
        """The earliest expiry time among entries (inf when empty), for one timer per table."""
        if not self._settle_top():
            return INFINITY
        return self.heap[0].key

    def ids(self):
        """Live entry ids, ascending."""
        cdef uint32_t i
        return [i for i in range(self.hw) if self.ents[i].hpos != EMU_CT_DEAD]

    def __len__(self):
        return self.count

    def memory_bytes(self):
        """Bytes of the object plus its slot, entry, heap and free-id arrays (capacity, not use)."""
        return (type(self).__basicsize__ + self.scap * sizeof(CtSlot)
                + <uint64_t>self.ecap * (sizeof(CtEnt) + sizeof(CtHeapItem) + sizeof(uint32_t)))

    def __sizeof__(self):
        return self.memory_bytes()

    def __repr__(self):
        return f"<ConntrackTable entries={self.count}>"


cdef class UdpSink:
    """A UDP socket that only counts what it receives (the receiving end of benchmarks)."""

    cdef public long long packets
    cdef public long long bytes

    def __call__(self, src, sport, dst, dport, payload, pid):
        self.packets += 1
        self.bytes += len(payload)


cdef class Record:
    """One captured frame (emu.pcap); `comments` may still grow while the frame's hop is processed."""

    cdef public double time
    cdef public object ifname  # capture point name: netns/ifname
    cdef public object frame
    cdef public object direction
    cdef public object comments
    cdef public int linktype
    cdef public object pid  # the frame id its decisions are recorded under

    def __init__(self, time, ifname, frame, direction, comments, linktype=1, pid=0):
        self.time, self.ifname, self.frame, self.direction = time, ifname, frame, direction
        self.comments, self.linktype, self.pid = comments, linktype, pid

    def __eq__(self, other):
        return isinstance(other, Record) and (self.time, self.ifname, self.frame, self.direction, self.comments,
                                              self.linktype, self.pid) == (other.time, other.ifname, other.frame,
                                                                           other.direction, other.comments,
                                                                           other.linktype, other.pid)

    def __repr__(self):
        return (f"Record(time={self.time!r}, ifname={self.ifname!r}, frame={self.frame!r}, "
                f"direction={self.direction!r}, comments={self.comments!r}, linktype={self.linktype!r}, "
                f"pid={self.pid!r})")


cdef class IpIdent:
    """A stack's IPv4 identification counter (the next datagram gets value + 1); the flow cache stamps it."""

    cdef public uint32_t value

    def __cinit__(self, value=0):
        self.value = value & 0xFFFF

    def next(self):
        self.value = (self.value + 1) & 0xFFFF
        return self.value


cdef class LinkCounters:
    """A link's rx/tx counters (`ip -s link`); C fields so the flow cache counts without Python."""

    cdef public long long rx_packets
    cdef public long long rx_bytes
    cdef public long long rx_dropped
    cdef public long long tx_packets
    cdef public long long tx_bytes
    cdef public long long tx_dropped

    def as_dict(self):
        return {"rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes, "rx_dropped": self.rx_dropped,
                "tx_packets": self.tx_packets, "tx_bytes": self.tx_bytes, "tx_dropped": self.tx_dropped}

    def __eq__(self, other):
        return isinstance(other, LinkCounters) and self.as_dict() == other.as_dict()

    def __repr__(self):
        return "LinkCounters(" + ", ".join(f"{k}={v}" for k, v in self.as_dict().items()) + ")"


# --------------------------------------------------------------------------
# The flow cache's executor: runs programs compiled by emu.net.flowcache
# --------------------------------------------------------------------------

def flow_key(uint32_t uid, frame):
    """What decides a frame's path (emu.net.flowcache): the ingress `uid`, the frame's length, Ethernet
    header and the IPv4/L4 fields any table looks at (not the IP ID or checksums, which a program carries
    through). None: not cached (not IPv4 without options, a fragment, not UDP/TCP/ICMP, truncated)."""
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef Py_ssize_t n, tail
    cdef uint8_t k[64]
    cdef int rel = _get_ro(frame, &view, &p, &n)
    try:
        if n < 34 or p[12] != 8 or p[13] != 0 or p[14] != 0x45 or p[20] & 0x3F or p[21]:
            return None
        if p[23] == 17 and n >= 42:
            tail = 6
        elif p[23] == 6 and n >= 54:
            tail = 6
        elif p[23] == 1 and n >= 42:
            tail = 4
        else:
            return None
        k[0], k[1], k[2], k[3] = uid & 0xFF, (uid >> 8) & 0xFF, (uid >> 16) & 0xFF, uid >> 24
        k[4], k[5] = n & 0xFF, (n >> 8) & 0xFF
        memcpy(k + 6, p, 18)
        memcpy(k + 24, p + 20, 4)
        memcpy(k + 28, p + 26, 8)
        if p[23] == 17:
            memcpy(k + 36, p + 34, 6)
        elif p[23] == 6:
            memcpy(k + 36, p + 34, 4)
            memcpy(k + 40, p + 46, 2)
        else:
            memcpy(k + 36, p + 34, 2)
            memcpy(k + 38, p + 38, 2)
        return PyBytes_FromStringAndSize(<char *>k, 36 + tail)
    finally:
        if rel:
            PyBuffer_Release(&view)


cdef enum:
    F_RX, F_TX, F_WIRE, F_STRIP, F_TRIM, F_PUSH, F_TTL, F_NAT, F_VXLAN, F_FDB, F_NEIGH, F_CT, F_RULE, F_SINK, \
        F_NOTE, F_HANDOFF

DEF FLOW_BUF = 70000
DEF FLOW_HEADROOM = 1024
DEF VEC = 256  # frames in a staged vector
DEF SLOT = 2048  # bytes per frame slot of a vector (frames up to SLOT - SLOT_HEAD)
DEF SLOT_HEAD = 512
cdef int NUD_SEND = 0x02 | 0x08 | 0x10 | 0x40 | 0x80

ctypedef struct FOp:
    int code
    int64_t a
    int64_t b
    int64_t c
    int64_t d
    int64_t e
    double f
    void *o1
    void *o2
    void *o3
    void *o4
    void *o5


cdef class FlowProg:
    """A program in the executor's form: a C array of steps, holding references to their objects."""

    cdef FOp *ops
    cdef int n
    cdef list refs
    cdef int sink
    cdef int handoff
    cdef int staged  # only data steps: may run stage by stage over a vector of frames

    def __dealloc__(self):
        free(self.ops)


cdef class FlowExec:
    """Runs flow programs: validates every step at its virtual time, then applies them in C.

    Python is entered only for what needs Python objects: capture records, trace decisions,
    iptables counters, the IP ID of an encapsulating stack, and a handoff to the slow path."""

    cdef object lab
    cdef object record_cls
    cdef object trace
    cdef list records
    cdef uint8_t *buf
    cdef object s_in
    cdef object s_out
    cdef uint8_t *vbuf
    cdef Py_ssize_t vhead[VEC]
    cdef Py_ssize_t vtail[VEC]
    cdef double vnow[VEC]
    cdef FOp *vops[VEC]  # each slot's program steps (the programs stay alive in the caller's list)
    cdef public long long staged  # frames that ran in staged vectors

    def __cinit__(self, lab, record_cls):
        self.buf = <uint8_t *>malloc(FLOW_BUF)
        self.vbuf = <uint8_t *>malloc(VEC * SLOT)
        if self.buf == NULL or self.vbuf == NULL:
            raise MemoryError()
        self.lab = lab
        self.record_cls = record_cls
        self.trace = lab.trace
        self.records = lab._records
        self.s_in = "in"
        self.s_out = "out"

    def __dealloc__(self):
        free(self.buf)
        free(self.vbuf)

    def compile(self, ops):
        """The C form of a program; ValueError when a step has objects it cannot drive in C."""
        cdef FlowProg p = FlowProg()
        cdef FOp *o
        cdef int i = 0
        p.refs = []
        p.sink = 0
        p.handoff = 0
        stacks = []
        p.n = len(ops)
        p.ops = <FOp *>malloc(sizeof(FOp) * (p.n if p.n else 1))
        if p.ops == NULL:
            raise MemoryError()
        memset(p.ops, 0, sizeof(FOp) * (p.n if p.n else 1))
        for op in ops:
            o = &p.ops[i]
            i += 1
            code = op[0]
            o.code = code
            p.refs.append(op)
            if code == F_RX or code == F_TX:
                if not isinstance(op[1], LinkCounters):
                    raise ValueError("link counters are not the data plane's")
                o.o1 = <void *>op[1]
                if op[6] is not None:
                    o.o5 = <void *>op[6]  # decisions recorded from here on start a new capture comment
                if op[2] is not None:
                    name = op[2].name  # a property: keep the string alive with the program
                    p.refs.append(name)
                    o.o2 = <void *>op[2].records
                    o.o3 = <void *>name
                    o.o4 = <void *>op[4]
                    o.a = op[5]
            elif code == F_WIRE:
                o.f = op[1]
            elif code == F_STRIP or code == F_TRIM or code == F_TTL:
                o.a = op[1]
            elif code == F_PUSH:
                if not isinstance(op[1], bytes) or len(op[1]) > 256:
                    raise ValueError("header to push")
                o.o1 = <void *>op[1]
                o.a = len(op[1])
            elif code == F_NAT:
                o.a, o.b, o.c = op[1], op[2], op[3]
            elif code == F_VXLAN:
                stacks.append(id(op[7]))
                if not isinstance(op[7].ip_ident, IpIdent):
                    raise ValueError("the stack's IP ID counter is not the data plane's")
                o.a, o.b, o.c, o.d = op[1], op[2], op[3], op[4]
                o.e = (op[5] << 8) | op[6]
                o.o1 = <void *>op[7].ip_ident  # kept alive by the stack, which the step holds
                o.f = op[8]
            elif code == F_FDB:
                if not isinstance(op[1], FdbTable):
                    raise ValueError("fdb")
                o.o1 = <void *>op[1]
                o.a, o.b, o.c = op[2], op[3], 1 if op[4] else 0
            elif code == F_NEIGH:
                if not isinstance(op[1], NeighTable):
                    raise ValueError("neighbour table")
                o.o1 = <void *>op[1]
                o.a, o.b, o.f = op[2], op[3], op[4]
            elif code == F_CT:
                if not isinstance(op[1], ConntrackTable):
                    raise ValueError("conntrack table")
                o.o1 = <void *>op[1]
                o.a, o.b, o.c, o.d = op[2], op[3], op[5], op[6]
                o.e = op[7]
                o.f = op[4]
                o.o2 = <void *>op[8]  # the deadline, a float object kept in refs
            elif code == F_RULE:
                o.o1 = <void *>op[1]
                o.a = op[2]
            elif code == F_SINK:
                o.o1 = <void *>op[1]
                o.a = op[2]
                p.sink = 1
            elif code == F_NOTE:
                o.o1 = <void *>op
            elif code == F_HANDOFF:
                o.o1 = <void *>op[1]
                p.handoff = 1
            else:
                raise ValueError(f"unknown step {code}")
        # Stage by stage keeps every table's end state and counter as frame by frame would, unless a step
        # needs the frames' order (capture records, a handoff, one IP ID counter used twice).
        p.staged = (not p.handoff and len(stacks) == len(set(stacks)) and
                    all(op[0] not in (F_RX, F_TX) or op[2] is None for op in ops))
        return p

    cdef double _valid(self, FlowProg p, const uint8_t *f, Py_ssize_t n, double now, double limit,
                       double horizon) noexcept:
        """The time the journey ends if every step may run, else -1."""
        cdef int i
        cdef FOp *o
        cdef HEnt *e
        cdef FdbTable ft
        cdef NeighTable nt
        cdef uint32_t ulen, c
        if n < 34 or _fold(_inet_acc(f + 14, 20, 0)) != 0xFFFF:
            return -1.0
        if p.sink and f[23] == 17 and _rd16(f + 40) != 0:
            ulen = _rd16(f + 38)
            if ulen < 8 or 34 + ulen > n:
                return -1.0
            c = (~_fold(_inet_acc(f + 34, ulen, _pseudo(_rd32(f + 26), _rd32(f + 30), 17, ulen))
                        - 0)) & 0xFFFF
            if c != 0:
                return -1.0
        for i in range(p.n):
            o = &p.ops[i]
            if o.code == F_WIRE:
                now += o.f
            elif o.code == F_FDB:
                ft = <FdbTable>o.o1
                e = _ht_find(&ft.h, (<uint64_t>o.a << 12))
                if e == NULL or (not e.aux and now - e.t > ft._ageing) or e.val != o.b:
                    return -1.0
            elif o.code == F_NEIGH:
                nt = <NeighTable>o.o1
                e = _ht_find(&nt.h, <uint64_t>o.a)
                if e == NULL or e.val != o.b or not (e.aux & NUD_SEND):
                    return -1.0
                if e.aux == 0x02 and now - e.t > o.f:
                    return -1.0
            elif o.code == F_CT:
                if now > (<double>(<object>o.o2)):
                    return -1.0
            elif o.code == F_HANDOFF:
                break
        return now if now < limit and now <= horizon else -1.0

    cdef inline int _data_op(self, FOp *o, uint8_t *b, Py_ssize_t *head, Py_ssize_t *tail, double *now,
                             bint dry) except -1:
        """One step that only touches the frame, C counters and C tables (shared by both executors)."""
        cdef LinkCounters lc
        cdef HEnt *e
        cdef CtEnt *ce
        cdef ConntrackTable ct
        cdef uint32_t ident
        cdef object obj
        if o.code == F_RX:
            lc = <LinkCounters>o.o1
            lc.rx_packets += 1
            lc.rx_bytes += tail[0] - head[0]
        elif o.code == F_TX:
            lc = <LinkCounters>o.o1
            lc.tx_packets += 1
            lc.tx_bytes += tail[0] - head[0]
        elif o.code == F_WIRE:
            now[0] += o.f
        elif o.code == F_STRIP:
            head[0] += o.a
        elif o.code == F_TRIM:
            tail[0] = head[0] + o.a
        elif o.code == F_PUSH:
            head[0] -= o.a
            memcpy(b + head[0], PyBytes_AS_STRING(<bytes>o.o1), o.a)
        elif o.code == F_TTL:
            _ttl_dec(b + head[0] + o.a)
        elif o.code == F_NAT:
            if o.a:
                _set_port(b + head[0], tail[0] - head[0], 0, <int>o.b, <uint16_t>o.c)
            else:
                _set_addr(b + head[0], tail[0] - head[0], 0, <int>o.b, <uint32_t>o.c)
        elif o.code == F_VXLAN:
            if dry:
                ident = <uint32_t>o.f
            else:
                (<IpIdent>o.o1).value = ((<IpIdent>o.o1).value + 1) & 0xFFFF
                ident = (<IpIdent>o.o1).value
            head[0] -= 36
            _vxlan_hdr(b + head[0], <uint32_t>(tail[0] - head[0] - 36), <uint32_t>o.a, <uint32_t>o.b,
                       <uint32_t>o.c, <uint32_t>o.d, <uint32_t>(o.e >> 8), ident, <uint32_t>(o.e & 0xFF))
        elif dry:
            return 0
        elif o.code == F_FDB:
            if o.c:
                e = _ht_find(&(<FdbTable>o.o1).h, (<uint64_t>o.a << 12))
                if e != NULL and not e.aux:
                    e.t = now[0]
        elif o.code == F_CT:
            ct = <ConntrackTable>o.o1
            ce = ct._ent(o.a)
            ce.state = <int32_t>o.c
            ce.status = <uint32_t>o.d
            ce.expires = now[0] + o.f
            if ce.expires < ct.heap[ce.hpos].key:
                ct.heap[ce.hpos].key = ce.expires
                ct._sift_up(ce.hpos)
            ce.pkts[o.b] += 1
            ce.nbytes[o.b] += <uint64_t>o.e
        elif o.code == F_RULE:
            obj = <object>o.o1
            obj.pkts += 1
            obj.bytes += o.a
        elif o.code == F_SINK:
            obj = <object>o.o1
            if isinstance(obj, UdpSink):
                (<UdpSink>obj).packets += 1
                (<UdpSink>obj).bytes += o.a
            else:
                obj.packets += 1
                obj.bytes += o.a
        return 0

    cdef int _apply(self, FlowProg p, const uint8_t *f, Py_ssize_t n, object pid, double now,
                    list seen, double horizon=-1.0, bint hops=True) except -1:
        """Carries one frame through every step (frame at a time); `seen` collects bytes instead (dry run).
        `hops`: keep the lab's capture-comment contexts as the slow path would (needed when the slow path
        may go on with this frame: inside a journey, after a handoff, or when decisions are recorded)."""
        cdef uint8_t *b = self.buf
        cdef Py_ssize_t head = FLOW_HEADROOM, tail = FLOW_HEADROOM + n
        cdef int i
        cdef FOp *o
        cdef object frame, rec, obj, clock, before, outer
        cdef Record r
        cdef bint tracing = self.trace.enabled
        cdef bint caps = hops and bool(self.lab._captured_links)  # capture comments follow hop contexts
        if n + FLOW_HEADROOM > FLOW_BUF:
            raise ValueError("frame too large for the flow cache")
        memcpy(b + head, f, n)
        for i in range(p.n):
            o = &p.ops[i]
            if o.code == F_RX or o.code == F_TX:
                if seen is not None:
                    seen.append(PyBytes_FromStringAndSize(<char *>(b + head), tail - head))
                    continue
                if o.o5 != NULL and caps:
                    self.lab.new_hop(pid, <object>o.o5)
                self._data_op(o, b, &head, &tail, &now, False)
                if o.o2 != NULL:
                    frame = PyBytes_FromStringAndSize(<char *>(b + head), tail - head)
                    if self.record_cls is Record:
                        r = Record.__new__(Record)
                        r.time, r.ifname, r.frame = now, <object>o.o3, frame
                        r.direction = self.s_in if o.code == F_RX else self.s_out
                        r.comments, r.linktype, r.pid = <object>o.o4, <int>o.a, pid
                        rec = r
                    else:
                        rec = self.record_cls(now, <object>o.o3, frame, self.s_in if o.code == F_RX else self.s_out,
                                              <object>o.o4, o.a, pid)
                    (<list>o.o2).append(rec)
                    self.records.append(rec)
            elif o.code == F_NOTE:
                if tracing and seen is None:
                    obj = <object>o.o1
                    self.lab.record(obj[6](now, obj[1], obj[2], obj[3], obj[4], obj[5]), pid)
            elif o.code == F_HANDOFF:
                if seen is not None:
                    return 0
                # The slow path goes on at `now`, within the same horizon (later programs may run too).
                clock = self.lab.clock
                before, outer = clock.now, clock.horizon
                clock.now, clock.horizon = now, horizon
                try:
                    (<object>o.o1).rx(PyBytes_FromStringAndSize(<char *>(b + head), tail - head), pid)
                finally:
                    clock.now, clock.horizon = before, outer
                return 0
            else:
                self._data_op(o, b, &head, &tail, &now, seen is not None)
        return 0

    def run(self, FlowProg p, frame, pid, double now, double limit, double horizon):
        """Carries `frame` (arriving now) through the program if its journey ends before `limit` (the next
        clock event) and by `horizon`; returns the journey's end time, or -1.0 (nothing done)."""
        cdef const uint8_t *f = <const uint8_t *>PyBytes_AS_STRING(frame)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(frame)
        cdef double end = self._valid(p, f, n, now, limit, horizon)
        if end >= 0:
            self._apply(p, f, n, pid, now, None, horizon)
        return end

    def dry_run(self, FlowProg p, frame):
        """The bytes at every RX and TX step, with no side effect (checks a new program)."""
        cdef list seen = []
        self._apply(p, <const uint8_t *>PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), 0, 0.0, seen)
        return seen

    def send(self, list progs, list templates, array.array sent, Py_ssize_t start, Py_ssize_t total,
             double t0, double interval, double limit, double final, bint vector=True):
        """Frames start..total-1 of a generator: frame i is flow i mod len(templates), stamped with IP ID
        template + sent[flow], arriving at t0 + i * interval. Runs them while each flow has a program and
        every journey ends before `limit` (the next clock event) and by the time the next frame arrives
        (the last one: by `final`); returns how many ran (the caller takes over from there).
        `vector`: runs of frames whose programs have the same steps go stage by stage (VEC at a time)."""
        cdef Py_ssize_t i, nflows = len(templates)
        cdef int k
        cdef bytes tpl
        cdef FlowProg p
        cdef uint8_t *w
        cdef Py_ssize_t n
        cdef double now
        cdef object lab = self.lab
        cdef int64_t *cnt = <int64_t *>sent.data.as_voidptr
        cdef Py_ssize_t v
        cdef bint tracing = self.trace.enabled
        if len(sent) != nflows or len(progs) != nflows:
            raise ValueError("one program slot and one counter per flow")
        i = start
        while i < total:
            k = <int>(i % nflows)
            obj = progs[k]
            if obj is None:
                return i - start
            p = <FlowProg>obj
            if vector and p.staged and not tracing:
                v = self._vector(progs, templates, cnt, i, total, t0, interval, limit, final)
                if v == 0:
                    return i - start
                i += v
                continue
            tpl = <bytes>templates[k]
            n = PyBytes_GET_SIZE(tpl)
            if n < 34 or n > 4096:
                return i - start
            w = self.buf + FLOW_BUF - 4096
            memcpy(w, PyBytes_AS_STRING(tpl), n)
            _stamp_id(w + 14, _rd16(w + 18) + <uint32_t>cnt[k])
            now = t0 + i * interval
            until = t0 + (i + 1) * interval if i + 1 < total else final
            if self._valid(p, w, n, now, limit, until) < 0:
                return i - start
            cnt[k] += 1
            lab._pid += 1
            self._apply(p, w, n, lab._pid, now, None, until, p.handoff or tracing)
            if p.handoff:
                return i - start + 1  # the slow path may have scheduled events: the caller looks again
            i += 1
        return total - start

    cdef Py_ssize_t _vector(self, list progs, list templates, int64_t *cnt, Py_ssize_t i0, Py_ssize_t total,
                            double t0, double interval, double limit, double final) except -1:
        """Up to VEC frames from i0 whose programs have the same steps: validate and stamp each, then
        run step 1 for all, step 2 for all, ... Returns how many ran (0: frame i0 may not run now)."""
        cdef Py_ssize_t nflows = len(templates), i, n, v = 0, s
        cdef int k, j
        cdef FlowProg first = None, q
        cdef bytes tpl
        cdef uint8_t *w
        cdef double now
        while v < VEC and i0 + v < total:
            i = i0 + v
            k = <int>(i % nflows)
            obj = progs[k]
            if obj is None:
                break
            q = <FlowProg>obj
            if first is None:
                first = q
            elif q is not first:
                if not q.staged or q.n != first.n:
                    break
                for j in range(q.n):
                    if q.ops[j].code != first.ops[j].code:
                        break
                else:
                    j = q.n
                if j != q.n:
                    break
            tpl = <bytes>templates[k]
            n = PyBytes_GET_SIZE(tpl)
            if n < 34 or n > SLOT - SLOT_HEAD:
                break
            w = self.vbuf + v * SLOT + SLOT_HEAD
            memcpy(w, PyBytes_AS_STRING(tpl), n)
            _stamp_id(w + 14, _rd16(w + 18) + <uint32_t>cnt[k])
            now = t0 + i * interval
            if self._valid(q, w, n, now, limit, t0 + (i + 1) * interval if i + 1 < total else final) < 0:
                break
            cnt[k] += 1
            self.vhead[v] = SLOT_HEAD
            self.vtail[v] = SLOT_HEAD + n
            self.vnow[v] = now
            self.vops[v] = q.ops
            v += 1
        if v == 0:
            return 0
        for j in range(first.n):
            for s in range(v):
                self._data_op(&self.vops[s][j], self.vbuf + s * SLOT, &self.vhead[s], &self.vtail[s], &self.vnow[s],
                              False)
        self.lab._pid += v
        self.staged += v
        return v
