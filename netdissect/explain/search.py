"""The best formula for one unit: exact branch and bound, and the published beam search.

The data are *signatures* (:class:`Problem`): every mask pixel of the dataset is described by
the set of concepts labelling it and the set of categories its image holds, and any formula is
true or false on a whole signature at once.  A unit is then a vector ``h`` (its mask pixels per
signature), every concept a 0/1 row over signatures, and any count a formula needs (its pixels
``A``, its overlap with the unit ``I``) is a dot product.  Expanding a formula ``g`` by every
concept and operation at once costs one product ``(g * h) @ T.T``: the AND child's overlap;
the AND NOT and OR children follow by inclusion-exclusion (docs/compositional.md).

IoU(G) = I / (m + A - I), where m is the unit's mask area over the images that hold a category
of some concept of G (the union rule of algorithms.md, section 1, extended to formulas).

:func:`search_exact` proves its answer: a partial formula ``g`` with ``r`` terms to go is
dropped only when no extension can beat the best IoU found, ``lam``:

    W_lam(g) + (sum of the r largest W_lam(c) over concepts c)  <=  lam * m(g)

with ``W_lam(X) = sum over signatures s in X of max(0, h_s - lam * (n_s - h_s))`` (proof in
docs/compositional.md).  :func:`search_beam` is Mu & Andreas's beam search, for comparison.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netdissect.explain.formula import OPS, Formula

_AND, _OR, _NOT = 0, 1, 2  # children index: OPS order


@dataclass
class Found:
    """The result of one unit's search."""

    formula: Formula
    iou: float
    single: Formula          # the best single concept (length 1)
    iou_single: float
    nodes: int               # formulas whose IoU was computed
    certified: bool          # True: no formula of the length searched has a higher IoU
    method: str


class Problem:
    """What every unit's search shares: concepts as 0/1 rows over signatures, their pixel counts.

    ``member`` bool (K, S): concept k labels signature s; ``n`` (S,) pixels of each signature;
    ``pattern`` (S,) int: bit g set when the signature's images hold category g; ``primary``
    (K,) the category of each concept.  Concept k's pixels are only where its image holds its
    primary category (as dissection counts them), so ``member[k, s]`` implies bit primary[k].
    """

    DENSE_LIMIT = 1 << 26  # K * S above this: concept columns are gathered from the sparse matrix
    TRIPLES_ALL = 1 << 23  # K**3 up to this: every triple count N(a AND b AND x) in one table (64 MB)

    def __init__(self, member, n: np.ndarray, pattern: np.ndarray, primary: np.ndarray, device=None):
        """``device`` (a torch device, e.g. "cuda"): the search's products over signatures run there with
        torch sparse matrices (the rest stays in numpy on the host); None: scipy on the CPU."""
        from scipy import sparse

        # few concepts per signature: the products cost nnz, not K S; (K, S) member may be sparse (Broden scale)
        self.Tsp = sparse.csr_matrix(member, dtype=np.float64)
        self.Tsp.eliminate_zeros()
        self.Tsp.data[:] = 1.0
        self.K, self.S = self.Tsp.shape
        self._cols = sparse.csc_matrix(self.Tsp.T.astype(bool))     # (S, K): concept columns on demand
        self.BT = np.ascontiguousarray(self._cols.toarray()) if self.K * self.S <= self.DENSE_LIMIT else None  # (S, K)
        self.n = np.asarray(n, np.float64)
        # Category sets as bit masks over the categories the concepts use (compact: bit j is the j-th
        # used category), int64 while there are at most 62 of them, Python ints (object arrays) beyond:
        # `1 << g` overflows int64 at g >= 63.
        primary = np.asarray(primary, np.int64).reshape(-1)
        used, slot = np.unique(primary, return_inverse=True)
        self.bits = np.int64 if len(used) <= 62 else object
        pattern = np.asarray(pattern)
        if pattern.ndim == 2:   # (S, G) bool: the categories each signature's images hold
            held = pattern.astype(bool)[:, used] if len(used) else np.zeros((len(pattern), 0), bool)
        else:                   # (S,) int bit masks over the dataset's categories (G < 63)
            pattern = pattern.astype(np.int64)
            held = np.stack([(pattern >> int(g)) & 1 for g in used], 1).astype(bool) if len(used) else \
                np.zeros((len(pattern), 0), bool)
        from netdissect.explain.data import pattern_ints

        compact = np.array(pattern_ints(held), dtype=object) if held.shape[0] else np.zeros(0, object)
        compact = compact.astype(self.bits)
        self.patterns, self.pattern_of = np.unique(compact, return_inverse=True)
        self.pattern_of = np.asarray(self.pattern_of).reshape(-1)
        one = np.array([1 << int(j) for j in range(len(used))], dtype=object).astype(self.bits)
        self.cat_bits = one[slot] if len(slot) else np.zeros(0, self.bits)
        self.cat_used, self.cat_slot = one, slot       # concept -> slot of its category
        # hits[x, q]: pattern q holds a category of the set x (every x < 2^G' when G' <= 12)
        self.hits = None
        if len(used) <= 12:
            sets = np.arange(1 << len(used), dtype=np.int64)
            self.hits = ((sets[:, None] & self.patterns.astype(np.int64)[None]) != 0).astype(np.float64)
        self.A1 = self.Tsp @ self.n                     # pixels of each concept
        self.Tsp32 = self.Tsp.astype(np.float32)       # integer sums below 2**24 are exact in float32
        self.device = None
        if device is not None:
            import warnings

            import torch

            self.device = torch.device(device)
            coo = self.Tsp.tocoo()
            idx = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))
            with warnings.catch_warnings():  # "sparse CSR tensor support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                self._Tt = {dt: torch.sparse_coo_tensor(idx, torch.ones(coo.nnz, dtype=dt), (self.K, self.S))
                            .coalesce().to_sparse_csr().to(self.device) for dt in (torch.float64, torch.float32)}
        self._nrows: dict = {}                           # formula -> N(g AND c) for every c (shared by units)
        self._pairs = None
        self._all_triples = None
        self._pair_ind = None
        self._memo_bytes = 0
        self.max_memo = 1 << 30

    def columns(self, cols) -> np.ndarray:
        """bool (S, len(cols)): the signatures of each concept of ``cols``."""
        cols = np.asarray(cols, np.int64)
        if self.BT is not None:
            return self.BT[:, cols]
        return self._cols[:, cols].toarray()

    def truth(self, f: Formula) -> np.ndarray:
        """0/1 (S,) the signatures where ``f`` holds."""
        c = self.columns(list(f.concepts))
        g = c[:, 0].copy()
        for j, (op, _) in enumerate(f.rest):
            if op == "AND":
                g &= c[:, j + 1]
            elif op == "OR":
                g |= c[:, j + 1]
            else:
                g &= ~c[:, j + 1]
        return g.astype(np.float64)

    def per_concept(self, Vt: np.ndarray) -> np.ndarray:
        """(n, K): for weights Vt (S, n), each column's sum over every concept's signatures (float64, or
        float32 for float32 weights: integer sums below 2**24 are exact there)."""
        Vt = np.ascontiguousarray(Vt)
        if self.device is not None:
            import torch

            V = torch.from_numpy(Vt).to(self.device)
            return (self._Tt[V.dtype] @ V).cpu().numpy().T.astype(np.float64)
        T = self.Tsp32 if Vt.dtype == np.float32 else self.Tsp
        return np.asarray(T @ Vt).T.astype(np.float64)

    def pair_counts(self) -> np.ndarray:
        """(K, K) pixels of (a AND b): the same for every unit, computed once."""
        if self._pairs is None:
            self._pairs = np.asarray((self.Tsp.multiply(self.n[None]).tocsr() @ self.Tsp.T).toarray())
        return self._pairs

    @property
    def triples_fit(self) -> bool:
        """Few concepts: the (K*K, K) triple tables and a dense (S, K) copy of the concepts fit."""
        return self.K ** 3 <= self.TRIPLES_ALL and self.K * self.S <= self.TRIPLES_ALL * 2

    def pair_sums(self, weights: np.ndarray) -> np.ndarray:
        """(K, K) sum of ``weights`` over the signatures of (a AND x) (K**3 <= TRIPLES_ALL): one
        matrix-vector product with the pair indicator."""
        if self._pair_ind is None:
            self.triples(np.zeros(self.S))
        return np.asarray(self._pair_ind @ np.asarray(weights, np.float64)).reshape(self.K, self.K)

    def triples(self, weights: np.ndarray) -> np.ndarray:
        """(K*K, K): sum of ``weights`` over the signatures of (a AND b AND x), row a*K + b, column x
        (K**3 <= TRIPLES_ALL).  One sparse product: the pair indicator (K*K, S) weighted, times T^T."""
        if self._pair_ind is None:
            from scipy import sparse

            Tb = self._cols.tocsr()   # (S, K): each signature's concepts
            lens = np.diff(Tb.indptr)
            rows, cols = [], []
            for sg in np.flatnonzero(lens):  # signature s holds the pair (a, b) for a, b among its concepts
                cs = Tb.indices[Tb.indptr[sg]:Tb.indptr[sg + 1]].astype(np.int64)
                cols.append(np.full(len(cs) ** 2, sg))
                rows.append((cs[:, None] * self.K + cs[None]).ravel())
            r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
            c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
            self._pair_ind = sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(self.K * self.K, self.S))
            self._TtT = np.ascontiguousarray(self.Tsp.T.toarray())            # (S, K) dense: K**3 is small
        return np.asarray(self._pair_ind @ (self._TtT * np.asarray(weights, np.float64)[:, None]))

    def and_counts_of(self, c: np.ndarray, o: np.ndarray, Gt: np.ndarray) -> np.ndarray:
        """(n, K) pixels of (g AND x) for formulas g (concepts ``c``, ops ``o``, truths ``Gt`` (S, n)) and every
        concept x; the same for every unit, so kept between units (up to ``max_memo`` bytes).

        Formulas of two concepts (a op b) read them off the triple counts N(a AND b AND x) by
        inclusion-exclusion: (a OR b) AND x = N(a x) + N(b x) - N(a b x), (a AND NOT b) AND x =
        N(a x) - N(a b x) (integers in float64: exact)."""
        if o.shape[1] == 1 and self.triples_fit:  # every (a, b) at once: one product (per layer), one gather
            a, b, op = c[:, 0], c[:, 1], o[:, 0]
            if self._all_triples is None:
                self._all_triples = self.triples(self.n)
            out = self._all_triples[a * self.K + b]
            P = self.pair_counts()
            orr, nott = op == _OR, op == _NOT
            out[orr] = P[a[orr]] + P[b[orr]] - out[orr]
            out[nott] = P[a[nott]] - out[nott]
            return out
        keys = [(row_c.tobytes(), row_o.tobytes()) for row_c, row_o in zip(c, o)]
        out = np.empty((len(keys), self.K))
        miss = []
        for i, k in enumerate(keys):
            row = self._nrows.get(k)
            if row is None:
                miss.append(i)
            else:
                out[i] = row
        if miss:
            rows = self.per_concept(Gt[:, miss].astype(np.float64) * self.n[:, None])
            out[miss] = rows
            if self._memo_bytes < self.max_memo:
                for i, r in zip(miss, rows):
                    self._nrows[keys[i]] = r
                self._memo_bytes += rows.nbytes
        return out

    def unit(self, h: np.ndarray) -> "Unit":
        return Unit(self, h)


class Unit:
    """One unit's counts: ``h`` (S,) its mask pixels per signature."""

    def __init__(self, problem: Problem, h: np.ndarray):
        self.p = problem
        self.h = np.asarray(h, np.float64)
        self.hp = np.bincount(problem.pattern_of, weights=self.h, minlength=len(problem.patterns))
        self._m: dict = {}
        # few categories (<= 12): m of every category set at once, a table indexed by the bit mask
        self.mtab = problem.hits @ self.hp if problem.hits is not None else None
        self.I1 = problem.Tsp @ self.h
        self.exact32 = self.h.sum() < 2 ** 24
        self.h32 = self.h.astype(np.float32)

    def m(self, masks) -> np.ndarray:
        """Mask area over the images holding any category in each bit mask of ``masks``."""
        if self.mtab is not None:
            return self.mtab[np.asarray(masks, np.int64)]
        masks = np.asarray(masks, self.p.bits)
        uniq, inv = np.unique(masks, return_inverse=True)
        vals = np.empty(len(uniq))
        for i, u in enumerate(uniq):
            v = self._m.get(int(u))
            if v is None:
                v = self._m[int(u)] = float(self.hp[(self.p.patterns & u) != 0].sum())
            vals[i] = v
        return vals[inv].reshape(masks.shape)

    def m_by_category(self, cms) -> np.ndarray:
        """(n, G') m(cm | g) for each mask of ``cms`` (n,) and each category g of the concepts."""
        if self.mtab is not None:
            return self.mtab[np.asarray(cms, np.int64)[:, None] | self.p.cat_used[None]]
        ucm, inv = np.unique(np.asarray(cms, self.p.bits), return_inverse=True)
        return self.m(ucm[:, None] | self.p.cat_used[None])[inv.ravel()]

    def m_children(self, cms) -> np.ndarray:
        """(n, K) m(cm | primary(c)) for each mask of ``cms`` (n,) and concept c."""
        return self.m_by_category(cms)[:, self.p.cat_slot]

    def iou(self, I, A, m) -> np.ndarray:
        den = m + A - I
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, I / np.where(den > 0, den, 1), 0.0)

    def singles(self):
        """(IoU of every concept, their category masks)."""
        cm = self.p.cat_bits
        return self.iou(self.I1, self.p.A1, self.m(cm)), cm


def _top_sums(W1: np.ndarray, r_max: int) -> np.ndarray:
    """top[r] = sum of the r largest entries of W1 (top[0] = 0)."""
    s = np.sort(W1)[::-1][:max(r_max, 0)]
    return np.concatenate([[0.0], np.cumsum(s)])


@dataclass
class _Nodes:
    """A batch of formulas of one depth d: concepts (n, d), ops (n, d - 1), and their counts."""

    c: np.ndarray
    o: np.ndarray
    I: np.ndarray
    A: np.ndarray
    W: np.ndarray   # sum of the positive weights max(0, h - lam e) over the formula's signatures
    V: np.ndarray   # sum of the negative parts max(0, lam e - h)
    cm: np.ndarray
    m: np.ndarray

    def take(self, sel) -> "_Nodes":
        return _Nodes(self.c[sel], self.o[sel], self.I[sel], self.A[sel], self.W[sel], self.V[sel], self.cm[sel],
                      self.m[sel])

    def formula(self, i: int) -> Formula:
        f = Formula(int(self.c[i, 0]))
        for j in range(self.o.shape[1]):
            f = f.extend(OPS[int(self.o[i, j])], int(self.c[i, j + 1]))
        return f


def _children(X: np.ndarray, g: np.ndarray, one: np.ndarray) -> np.ndarray:
    """(n, 3, K) a sum over the children (AND, OR, AND NOT) of n formulas by every concept, from the
    AND children's ``X`` (n, K), the parents' ``g`` (n,) and the concepts' ``one`` (K,) (inclusion-exclusion)."""
    out = np.empty((X.shape[0], 3, X.shape[1]))
    out[:, 0] = X
    np.subtract(g[:, None], X, out=out[:, 2])
    np.add(out[:, 2], one[None], out=out[:, 1])
    return out


def _truths(p: Problem, c: np.ndarray, o: np.ndarray, dtype=np.float64) -> np.ndarray:
    """0/1 (S, n): the signatures where each formula (concepts ``c``, ops ``o``) holds."""
    G = p.columns(c[:, 0])
    for j in range(o.shape[1]):
        Tc = p.columns(c[:, j + 1])
        op = o[:, j]
        for code, fn in ((_AND, lambda a, b: a & b), (_OR, lambda a, b: a | b), (_NOT, lambda a, b: a & ~b)):
            cols = np.flatnonzero(op == code)
            if len(cols):
                G[:, cols] = fn(G[:, cols], Tc[:, cols])
    return G.astype(dtype)


class _Exact:
    """Depth-first branch and bound over batches of nodes (one product expands a whole batch)."""

    def __init__(self, problem: Problem, h: np.ndarray, length: int, chunk: int, max_nodes):
        self.p, self.u = problem, problem.unit(h)
        self.length, self.chunk, self.max_nodes = length, chunk, max_nodes
        self.nodes = 0
        self.open = False  # a branch left unexplored by max_nodes
        # length 3 over few concepts: the unit's triple overlaps I(a AND b AND x), one sparse product,
        # replace every product of the search's last level and the unit's pair overlaps
        self.I3 = problem.triples(self.u.h) if length == 3 and problem.triples_fit else None

    def weights(self):
        p, u = self.p, self.u
        phi = u.h - self.lam * (p.n - u.h)
        self.w, self.v = np.maximum(0.0, phi), np.maximum(0.0, -phi)
        self.W1, self.V1 = p.Tsp @ self.w, p.Tsp @ self.v
        self.top = _top_sums(self.W1, self.length - 1)
        G = len(p.cat_used)
        Wmax, Pmax = np.full(G, -np.inf), np.full(G, -np.inf)
        np.maximum.at(Wmax, p.cat_slot, self.W1)
        np.maximum.at(Pmax, p.cat_slot, self.W1 - self.V1)
        self.cat_max = (Wmax, Pmax)
        self.w_lam = self.lam

    def _more(self, lhs, rhs):
        return lhs > rhs - 1e-9 * (np.abs(lhs) + np.abs(rhs) + 1.0)  # a margin for rounding: never drop a tie

    def keep(self, nodes: "_Nodes", r: int) -> np.ndarray:
        """The bound's test: may some extension of each node by ``r`` more terms beat lam?

        Any r: W(g) + (the r largest W(c)) > lam m(g).  With r = 1 the children are g AND c,
        g AND NOT c (inside g: f(child) <= min(W(g), W(c)) for AND, <= W(g) for AND NOT) and g OR c
        (phi(g OR c) <= phi(g) + phi(c) + min(V(g), V(c))), each against lam m(g | c); proofs in
        docs/compositional.md."""
        if r != 1:
            return self._more(nodes.W + self.top[r], self.lam * nodes.m)
        # per category g of the concepts: the tests for every c of g at once (both sides are
        # monotone in the concept's W, and min(Phi(c) + V(G), W(c)) <= min(max Phi(c) + V(G), max W(c)))
        mg = self.u.m_by_category(nodes.cm)                                      # (n, G'): m(g | c)
        rhs = self.lam * mg
        W, V = nodes.W[:, None], nodes.V[:, None]
        Wmax, Pmax = self.cat_max
        ok = self._more(nodes.W, self.lam * nodes.m)                              # AND NOT children
        ok |= self._more(np.minimum(W, Wmax[None]), rhs).any(1)                  # AND children
        ok |= self._more((W - V) + np.minimum(Pmax[None] + V, Wmax[None]), rhs).any(1)  # OR children
        return ok

    def run(self) -> Found:
        p, u = self.p, self.u
        K = p.K
        iou1, cm1 = u.singles()
        b = int(np.argmax(iou1))  # the first of ties
        self.single, self.single_iou = Formula(b), float(iou1[b])
        self.best, self.lam = self.single, self.single_iou
        self.nodes = K
        if self.length > 1 and K:
            self.weights()
            m1 = u.m(cm1)
            roots = _Nodes(np.arange(K)[:, None], np.zeros((K, 0), np.int64), u.I1.copy(), p.A1.copy(),
                           self.W1.copy(), self.V1.copy(), cm1.copy(), m1)
            self.descend(roots.take(p.A1 > 0))
        return Found(self.best, self.lam, self.single, self.single_iou, self.nodes, not self.open, "exact")

    def descend(self, nodes: _Nodes) -> None:
        """Expand ``nodes`` (all of one depth d < length), best first, in batches; recurse into children."""
        d = nodes.c.shape[1]
        r = self.length - d
        order = np.argsort(-(nodes.W + self.top[r] - self.lam * nodes.m), kind="stable")
        nodes = nodes.take(order)
        for s in range(0, len(nodes.I), self.chunk):
            if self.max_nodes is not None and self.nodes >= self.max_nodes:
                self.open = True
                return
            if self.w_lam < self.lam:
                self.weights()
            batch = nodes.take(slice(s, s + self.chunk))
            batch = batch.take(self.keep(batch, r))
            if len(batch.I):
                self.expand(batch, r - 1)

    def expand(self, g: _Nodes, r: int) -> None:
        p, u = self.p, self.u
        K, n = p.K, len(g.I)
        d = g.c.shape[1]
        X = None
        if d == 2 and r <= 0 and self.I3 is not None:  # the last level of length 3: no product at all
            a, b, op = g.c[:, 0], g.c[:, 1], g.o[:, 0]
            X = self.I3[a * K + b]                      # I(a AND b AND x), by inclusion-exclusion below
            orr, nott = op == _OR, op == _NOT
            X[orr] = self.I3[a[orr] * (K + 1)] + self.I3[b[orr] * (K + 1)] - X[orr]
            X[nott] = self.I3[a[nott] * (K + 1)] - X[nott]
            N = p.and_counts_of(g.c, g.o, None)
            G = None
        elif d == 1:  # the pairs: counts of (a AND b) are shared by every unit
            N = p.pair_counts()[g.c[:, 0]]
            if self.I3 is not None:
                X = self.I3[g.c[:, 0] * (K + 1)]         # I(a AND x) = I(a AND a AND x)
                G = None
            else:
                G = p.columns(g.c[:, 0]).astype(np.float64)
        elif r <= 0 and u.exact32:  # the last level needs only integer overlaps: float32 is exact, half the bytes
            G32 = _truths(p, g.c, g.o, np.float32)
            N = p.and_counts_of(g.c, g.o, G32)
            G = None
        else:
            G = _truths(p, g.c, g.o)
            N = p.and_counts_of(g.c, g.o, G)
        if X is not None:
            pass
        elif G is None:
            X = p.per_concept(G32 * u.h32[:, None])
        else:
            X = p.per_concept(G * u.h[:, None])
        I, A = _children(X, g.I, u.I1), _children(N, g.A, p.A1)
        m = u.m_children(g.cm)[:, None, :]
        valid = (A > 0) & (A != g.A[:, None, None])  # an empty set, or the parent's own set: dominated
        if d == 1:  # (a AND b) is (b AND a), (a OR b) is (b OR a): keep one of each
            lower = np.arange(K)[None, :] < g.c[:, :1]
            valid[:, _AND] &= ~lower
            valid[:, _OR] &= ~lower
        self.nodes += int(valid.sum())
        iou = np.full(I.shape, -1.0)
        np.divide(I, (m + A) - I, out=iou, where=valid)  # valid: A > 0, so m + A - I >= A > 0
        j = np.unravel_index(int(np.argmax(iou)), iou.shape)
        if iou[j] > self.lam:
            self.lam = float(iou[j])
            self.best = g.formula(j[0]).extend(OPS[j[1]], int(j[2]))
        if r <= 0:
            return
        if self.w_lam < self.lam:
            self.weights()
        if d == 1 and self.I3 is not None:  # W, V of the pairs (a AND x): two products with the pair indicator
            Y, Z = p.pair_sums(self.w)[g.c[:, 0]], p.pair_sums(self.v)[g.c[:, 0]]
            Wg, Vg = self.W1[g.c[:, 0]], self.V1[g.c[:, 0]]
        else:
            Y = p.per_concept(G * self.w[:, None])
            Z = p.per_concept(G * self.v[:, None])
            Wg, Vg = self.w @ G, self.v @ G
        W, V = _children(Y, Wg, self.W1), _children(Z, Vg, self.V1)
        cm = g.cm[:, None] | p.cat_bits[None]
        i, o, c = np.nonzero(valid)
        Wk, Vk, cmk, mk = W[i, o, c], V[i, o, c], cm[i, c], m[i, 0, c]
        ok = self.keep(_Nodes(None, None, None, None, Wk, Vk, cmk, mk), r)  # the bound first: few children pass
        i, o, c = i[ok], o[ok], c[ok]
        kids = _Nodes(np.concatenate([g.c[i], c[:, None]], 1), np.concatenate([g.o[i], o[:, None]], 1),
                      I[i, o, c], A[i, o, c], Wk[ok], Vk[ok], cmk[ok], mk[ok])
        if len(kids.I):
            self.descend(kids)


def search_exact(problem: Problem, h: np.ndarray, length: int = 3, chunk: int = 256,
                 max_nodes: int | None = None) -> Found:
    """The formula of at most ``length`` concepts with the highest IoU, and the proof.

    ``max_nodes``: stop expanding after this many formula evaluations; the answer is then the best
    found and ``certified`` is False when a branch was left open.
    """
    return _Exact(problem, h, length, chunk, max_nodes).run()


def search_beam(problem: Problem, h: np.ndarray, length: int = 3, width: int = 10) -> Found:
    """Mu & Andreas (2020)'s beam search: keep the ``width`` best formulas; at each step extend each
    by every op and concept, then keep the ``width`` best of the beam and its new extensions (ties:
    the beam first, then the extensions in beam, op, concept order; an extension equal to a member
    of the beam is not added twice)."""
    p, u = problem, problem.unit(h)
    K = p.K
    iou1, cm1 = u.singles()
    b = int(np.argmax(iou1))
    single, single_iou = Formula(b), float(iou1[b])
    order = np.argsort(-iou1, kind="stable")[:width]
    beam = [(float(iou1[c]), Formula(int(c)), u.I1[c], p.A1[c], int(cm1[c])) for c in order]
    nodes = K
    for _ in range(length - 1):
        fs = [t[1] for t in beam]
        G = np.stack([p.truth(f) for f in fs], 1)
        Ig = np.array([t[2] for t in beam])
        Ag = np.array([t[3] for t in beam])
        X = p.per_concept(G * u.h[:, None])
        N = p.per_concept(G * p.n[:, None])
        I = np.stack([X, Ig[:, None] + u.I1[None] - X, Ig[:, None] - X], 1)
        A = np.stack([N, Ag[:, None] + p.A1[None] - N, Ag[:, None] - N], 1)
        cm = np.array([t[4] for t in beam], p.bits)[:, None] | p.cat_bits[None]
        iou = u.iou(I, A, u.m(cm)[:, None, :].repeat(3, 1))
        nodes += iou.size
        n = len(beam)
        allv = np.concatenate([[t[0] for t in beam], iou.ravel()])
        seen = set(fs)
        nxt = []
        for k in np.argsort(-allv, kind="stable"):
            if k < n:
                nxt.append(beam[k])
                continue
            i, o, c = np.unravel_index(k - n, iou.shape)
            f = fs[i].extend(OPS[o], int(c))
            if f in seen:
                continue
            seen.add(f)
            nxt.append((float(iou[i, o, c]), f, I[i, o, c], A[i, o, c], int(cm[i, c])))
            if len(nxt) == width:
                break
        beam = nxt[:width]
    top = beam[0]
    return Found(top[1], top[0], single, single_iou, nodes, False, f"beam{width}")
