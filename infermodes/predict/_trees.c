/* An exact evaluator of XGBoost tree ensembles (infermodes/predict/trees.py builds and checks it).
 *
 * Forest(left, feature, value, default_left, roots, base, num_features): the trees' nodes, all
 *   trees in one array (`left` absolute, -1 for a leaf; the right child is always left + 1, as
 *   XGBoost's CPU predictor assumes), each tree's root, and the base margin. The constructor
 *   checks every index and that each tree is a tree (no node reached twice). It then makes
 *   every leaf its own child (split NaN, so every value goes "right", to left + 1 = itself; its
 *   value kept aside), so that every walk of a tree takes exactly its depth in steps: no
 *   data-dependent loop exit, and several rows walk a tree in lockstep (independent loads the
 *   CPU overlaps), as XGBoost's array layout walks blocks of rows.
 *   `base` holds one float32 per output group, `groups` each tree's group (default: all 0).
 *   `transform` is the objective's PredTransform: 0 none, 1 sigmoid (binary:logistic,
 *   reg:logistic: `base` is then the base score as stored, the margin its ProbToMargin),
 *   2 softmax over the groups (multi:softprob), 3 the index of the largest margin
 *   (multi:softmax).
 * Forest.predict(rows, out): for each row of a C-contiguous float32 matrix (out: one value per
 *   row, or one per group for softmax), what XGBoost's CPU
 *   predictor computes (src/predictor/cpu_predictor.cc, predict_fn.h at v3.2.0): start from the
 *   base margin, then for each tree in order add its leaf's value, in float32; at a split the
 *   row goes left when `value < split_condition` (float32 compare), and a NaN goes to the
 *   default child. Infinities compare as numbers, as in XGBoost. Large batches release the GIL.
 *   The sigmoid, logit, softmax and arg-max are XGBoost's expressions (src/common/math.h,
 *   common.h, src/objective/regression_loss.h, multiclass_obj.cu) on the same glibc expf and
 *   logf that libxgboost.so imports (it has no vector math), in this same process.
 * Forest.kernel: what walks the trees of whole SIMD registers of rows: "avx512" (16 rows per
 *   register) or "avx2" (8), the widest this CPU runs (module KERNELS, chosen at import:
 *   the build has no -march), on a copy of the trees padded to complete trees; "scalar" (the
 *   walk above, always used for the rows left over) where a tree is deeper than SIMD_MAX_DEPTH.
 *   Every kernel gives the same bits (see "The SIMD kernels" below); setting the attribute
 *   forces one, to compare them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#if defined(__x86_64__) || defined(__i386__)
#define X86_KERNELS /* the SIMD kernels are built (elsewhere only the scalar walk) */
#include <immintrin.h>
#endif
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float value;     /* split condition; NaN at a leaf */
    int32_t left;    /* absolute index of the left child; a leaf's: its own index - 1 */
    uint32_t column; /* split feature; bit 31: a missing value goes left */
} Node;

typedef struct {
    PyObject_HEAD Node *nodes;
    float *leaf_values; /* by node index; 0 for a split */
    int32_t *roots;
    int32_t *depths; /* the longest root-to-leaf walk of each tree, in splits */
    int32_t *tree_groups;                       /* each tree's output group */
    float *bases;                               /* the margin each group starts from */
    Py_ssize_t num_trees, num_features, groups;
    int transform;
    /* The SIMD kernels' layout (NULL when a tree is deeper than SIMD_MAX_DEPTH): each tree of
     * depth D padded to a complete tree, 2^(D+1) - 1 slots from simd_offsets[t] in breadth-first
     * order (the children of slot p at 2p + 1 and 2p + 2): slots below 2^D - 1 are splits, the
     * rest leaves. A leaf above depth D becomes a split on NaN (every value goes right, a NaN too:
     * default left is not set) above its rightmost descendant at depth D, which holds its value. */
    uint32_t *simd_columns; /* split feature, DEFAULT_LEFT as in Node.column */
    float *simd_values;     /* split condition, or the leaf's value */
    int32_t *simd_offsets;
    int kernel; /* the Kernel that predicts large batches */
} Forest;

enum { TRANSFORM_NONE, TRANSFORM_SIGMOID, TRANSFORM_SOFTPROB, TRANSFORM_ARGMAX };

#define DEFAULT_LEFT 0x80000000u
#define ROW_BLOCK 64        /* rows that stay in L1 while every tree walks them */
#define LOCKSTEP 16          /* rows that walk a tree together */
#define GIL_FREE_WORK 4096  /* rows x trees above which the GIL is released */
#define SIMD_MAX_DEPTH 10   /* deeper trees stay scalar: a padded tree has 2^(depth+1) slots */
#define SIMD_MAX_FEATURES (1 << 24) /* row offsets of a block in int32 gather indices */
#define SIMD_SLACK 32       /* slots read past the last tree by the 32-slot table loads */
#define SIMD_MAX_SLOTS (8 << 20) /* at most 64 MiB of padded trees; a larger forest stays scalar */

/* Which code walks the trees of full blocks of rows: blocks of 16 rows (AVX-512) or 8 (AVX2)
 * walk each tree in lanes of SIMD registers, the remaining rows as with KERNEL_SCALAR. */
typedef enum { KERNEL_SCALAR, KERNEL_AVX2, KERNEL_AVX512, KERNEL_COUNT } Kernel;
static const char *const kernel_names[KERNEL_COUNT] = {"scalar", "avx2", "avx512"};
static int kernel_runs[KERNEL_COUNT]; /* this CPU runs it (set at import) */
static const Py_ssize_t kernel_lanes[KERNEL_COUNT] = {1, 8, 16};
/* The fewest rows left over that one more register (padded with zero rows) predicts faster than
 * the scalar walk (Abalone, one run: one AVX-512 register 2.3 us, one AVX2 register 2.1 us;
 * scalar 2 rows 1.8 us, 3 rows 2.2, 4 rows 2.6). */
static const Py_ssize_t kernel_padded_min_rows[KERNEL_COUNT] = {1, 4, 4};

/* LogisticRegression::ProbToMargin: the base score bounded to [kRtEps, 1 - kRtEps] (common::Max,
 * common::Min), then common::Logit. */
static float logistic_margin(float base_score) {
    const float rt_eps = 1e-6f;
    base_score = base_score < rt_eps ? rt_eps : base_score;
    base_score = base_score > 1.0f - rt_eps ? 1.0f - rt_eps : base_score;
    return -logf(1.0f / base_score - 1.0f);
}

/* common::Sigmoid(float): std::min(-x, 88.7f), then 1 / (expf + 1 + kEps), in float. */
static inline float sigmoid_of(float x) {
    const float eps = 1e-16; /* float constexpr kEps = 1e-16 */
    float m = -x;
    m = 88.7f < m ? 88.7f : m;
    float denom = expf(m) + 1.0f + eps;
    return 1.0f / denom;
}

/* common::Softmax: the largest by fmaxf, expf of each minus it summed in double, each divided
 * by the sum as a float. */
static void softmax(float *p, Py_ssize_t k) {
    float wmax = p[0];
    for (Py_ssize_t i = 1; i < k; i++) wmax = fmaxf(p[i], wmax);
    double wsum = 0.0f;
    for (Py_ssize_t i = 0; i < k; i++) {
        p[i] = expf(p[i] - wmax);
        wsum += p[i];
    }
    for (Py_ssize_t i = 0; i < k; i++) p[i] /= (float)wsum;
}

/* common::FindMaxIndex: the first of the largest. */
static float argmax(const float *p, Py_ssize_t k) {
    Py_ssize_t best = 0;
    for (Py_ssize_t i = 1; i < k; i++)
        if (p[i] > p[best]) best = i;
    return (float)best;
}

/* Back to an empty forest (predict refuses it), as after a failed __init__. */
static void forest_clear(Forest *self) {
    PyMem_Free(self->nodes);
    PyMem_Free(self->leaf_values);
    PyMem_Free(self->roots);
    PyMem_Free(self->depths);
    PyMem_Free(self->tree_groups);
    PyMem_Free(self->bases);
    PyMem_Free(self->simd_columns);
    PyMem_Free(self->simd_values);
    PyMem_Free(self->simd_offsets);
    self->simd_columns = NULL;
    self->simd_values = NULL;
    self->simd_offsets = NULL;
    self->kernel = KERNEL_SCALAR;
    self->nodes = NULL;
    self->leaf_values = NULL;
    self->roots = self->depths = self->tree_groups = NULL;
    self->bases = NULL;
    self->num_trees = self->groups = 0;
}

static void forest_dealloc(Forest *self) {
    forest_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A buffer of `count` items of one struct format character (e.g. "i" int32). */
static int get_vector(PyObject *source, Py_buffer *view, const char *format, Py_ssize_t itemsize,
                      const char *name) {
    if (PyObject_GetBuffer(source, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (view->itemsize != itemsize || strcmp(view->format, format) != 0 || view->ndim > 1) {
        PyErr_Format(PyExc_TypeError, "%s: expected a 1-D array of format '%s'", name, format);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Every node of the tree at `root` reached once, children in range: its depth, or -1. `seen`
 * marks nodes across trees (a node shared by two trees is refused too); `stack` has room for
 * every node. */
static int32_t check_tree(const Node *nodes, Py_ssize_t num_nodes, int32_t root, uint8_t *seen,
                          int32_t *stack, int32_t *depth_of) {
    if (root < 0 || root >= num_nodes || seen[root]) return -1;
    Py_ssize_t top = 0;
    int32_t deepest = 0;
    stack[top++] = root;
    seen[root] = 1;
    depth_of[root] = 0;
    while (top > 0) { /* each node is pushed at most once: at most num_nodes iterations */
        int32_t at = stack[--top];
        int32_t left = nodes[at].left;
        if (left < 0) {
            if (depth_of[at] > deepest) deepest = depth_of[at];
            continue;
        }
        if (left >= num_nodes - 1 || seen[left] || seen[left + 1]) return -1;
        for (int32_t child = left; child <= left + 1; child++) {
            seen[child] = 1;
            depth_of[child] = depth_of[at] + 1;
            stack[top++] = child;
        }
    }
    return deepest;
}

/* The SIMD layout of the forest's trees (see Forest), before their leaves become their own
 * children; the best kernel this CPU runs. Left empty (scalar) when a tree is deeper than
 * SIMD_MAX_DEPTH, the padded trees would take over SIMD_MAX_SLOTS slots, or the rows are too
 * wide; -1 when out of memory. */
static int pad_trees(Forest *self, Py_ssize_t trees) {
    self->kernel = KERNEL_SCALAR;
    if (!kernel_runs[KERNEL_AVX2] || self->num_features > SIMD_MAX_FEATURES) return 0;
    Py_ssize_t total = 0;
    for (Py_ssize_t t = 0; t < trees; t++) {
        if (self->depths[t] > SIMD_MAX_DEPTH) return 0;
        total += ((Py_ssize_t)2 << self->depths[t]) - 1;
        if (total > SIMD_MAX_SLOTS) return 0; /* many deep, sparse trees: padding would balloon */
    }
    self->simd_columns = PyMem_Calloc((size_t)(total + SIMD_SLACK), sizeof(uint32_t));
    self->simd_values = PyMem_Calloc((size_t)(total + SIMD_SLACK), sizeof(float));
    self->simd_offsets = PyMem_Calloc((size_t)trees, sizeof(int32_t));
    int32_t *origin = PyMem_Calloc(((size_t)2 << SIMD_MAX_DEPTH) - 1, sizeof(int32_t));
    if (!self->simd_columns || !self->simd_values || !self->simd_offsets || !origin) {
        PyMem_Free(origin);
        return -1;
    }
    Py_ssize_t offset = 0;
    for (Py_ssize_t t = 0; t < trees; t++) {
        uint32_t *columns = self->simd_columns + offset;
        float *values = self->simd_values + offset;
        const int32_t splits = (1 << self->depths[t]) - 1;
        self->simd_offsets[t] = (int32_t)offset;
        origin[0] = self->roots[t]; /* the node each slot stands for; -1: none reaches it */
        for (int32_t p = 0; p < splits; p++) {
            const int32_t at = origin[p];
            if (at >= 0 && self->nodes[at].left >= 0) {
                /* a split on NaN sends every value right, as one on -inf does (a NaN goes to the
                 * default child either way); only the padding splits on NaN */
                const float value = self->nodes[at].value;
                columns[p] = self->nodes[at].column;
                values[p] = value != value ? -INFINITY : value;
                origin[2 * p + 1] = self->nodes[at].left;
                origin[2 * p + 2] = self->nodes[at].left + 1;
            } else { /* a leaf's value or nothing, carried right */
                values[p] = NAN;
                origin[2 * p + 1] = -1;
                origin[2 * p + 2] = at;
            }
        }
        for (int32_t p = splits; p < 2 * splits + 1; p++)
            values[p] = origin[p] >= 0 ? self->nodes[origin[p]].value : 0.0f;
        offset += 2 * (Py_ssize_t)splits + 1;
    }
    PyMem_Free(origin);
    for (int kernel = KERNEL_AVX2; kernel < KERNEL_COUNT; kernel++)
        if (kernel_runs[kernel]) self->kernel = kernel;
    return 0;
}

static int forest_init(Forest *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"left",         "feature",   "value",  "default_left", "roots", "base",
                               "num_features", "transform", "groups", NULL};
    PyObject *left_obj, *feature_obj, *value_obj, *default_obj, *roots_obj, *base_obj;
    PyObject *groups_obj = Py_None;
    Py_ssize_t num_features;
    int transform = TRANSFORM_NONE;
    if (self->nodes != NULL) { /* another thread may be predicting from its arrays, GIL released */
        PyErr_SetString(PyExc_TypeError, "a Forest is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOn|iO", keywords, &left_obj,
                                     &feature_obj, &value_obj, &default_obj, &roots_obj, &base_obj,
                                     &num_features, &transform, &groups_obj))
        return -1;
    Py_buffer left, feature, value, default_left, roots, base, groups = {0};
    int ok = -1;
    uint8_t *seen = NULL;
    int32_t *stack = NULL, *depth_of = NULL;
    if (get_vector(left_obj, &left, "i", 4, "left") < 0) return -1;
    if (get_vector(feature_obj, &feature, "i", 4, "feature") < 0) goto release_left;
    if (get_vector(value_obj, &value, "f", 4, "value") < 0) goto release_feature;
    if (get_vector(default_obj, &default_left, "B", 1, "default_left") < 0) goto release_value;
    if (get_vector(roots_obj, &roots, "i", 4, "roots") < 0) goto release_default;
    if (get_vector(base_obj, &base, "f", 4, "base") < 0) goto release_roots;
    if (groups_obj != Py_None && get_vector(groups_obj, &groups, "i", 4, "groups") < 0)
        goto release_base;
    Py_ssize_t n = left.len / 4, trees = roots.len / 4, k = base.len / 4;
    if (feature.len / 4 != n || value.len / 4 != n || default_left.len != n || n >= INT32_MAX ||
        trees < 1 || num_features < 1 || num_features > INT32_MAX || k < 1 ||
        (groups.buf != NULL && groups.len / 4 != trees) || transform < TRANSFORM_NONE ||
        transform > TRANSFORM_ARGMAX || ((transform == TRANSFORM_SIGMOID) && k != 1)) {
        PyErr_SetString(PyExc_ValueError,
                        "node arrays of different lengths, no trees, or groups, bases and "
                        "transform that do not fit");
        goto release_all;
    }
    forest_clear(self);
    self->nodes = PyMem_Calloc((size_t)n, sizeof(Node));
    self->leaf_values = PyMem_Calloc((size_t)n, sizeof(float));
    self->roots = PyMem_Calloc((size_t)trees, sizeof(int32_t));
    self->depths = PyMem_Calloc((size_t)trees, sizeof(int32_t));
    self->tree_groups = PyMem_Calloc((size_t)trees, sizeof(int32_t));
    self->bases = PyMem_Calloc((size_t)k, sizeof(float));
    seen = PyMem_Calloc((size_t)n, 1);
    stack = PyMem_Calloc((size_t)n, sizeof(int32_t));
    depth_of = PyMem_Calloc((size_t)n, sizeof(int32_t));
    if (!self->nodes || !self->leaf_values || !self->tree_groups || !self->bases || !self->roots || !self->depths || !seen || !stack || !depth_of) {
        PyErr_NoMemory();
        goto release_all;
    }
    const int32_t *lefts = left.buf, *features = feature.buf;
    const float *values = value.buf;
    const uint8_t *defaults = default_left.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        int32_t column = features[i];
        if (lefts[i] >= 0 && (column < 0 || column >= num_features)) {
            PyErr_Format(PyExc_ValueError, "node %zd splits on feature %d of %zd", i, column,
                         num_features);
            goto release_all;
        }
        self->nodes[i].value = values[i];
        self->nodes[i].left = lefts[i] < 0 ? -1 : lefts[i];
        self->nodes[i].column = (uint32_t)(lefts[i] < 0 ? 0 : column) | (defaults[i] ? DEFAULT_LEFT : 0);
    }
    for (Py_ssize_t t = 0; t < trees; t++) {
        int32_t root = ((const int32_t *)roots.buf)[t];
        int32_t depth = check_tree(self->nodes, n, root, seen, stack, depth_of);
        if (depth < 0) {
            PyErr_Format(PyExc_ValueError, "tree %zd is not a tree of in-range nodes", t);
            goto release_all;
        }
        int32_t group = groups.buf != NULL ? ((const int32_t *)groups.buf)[t] : 0;
        if (group < 0 || group >= k) {
            PyErr_Format(PyExc_ValueError, "tree %zd is of group %d of %zd", t, group, k);
            goto release_all;
        }
        self->roots[t] = root;
        self->depths[t] = depth;
        self->tree_groups[t] = group;
    }
    self->num_features = num_features;
    if (pad_trees(self, trees) < 0) {
        PyErr_NoMemory();
        goto release_all;
    }
    for (Py_ssize_t i = 0; i < n; i++) { /* each leaf its own child: x < NaN is false */
        if (self->nodes[i].left >= 0) continue;
        self->leaf_values[i] = self->nodes[i].value;
        self->nodes[i] = (Node){.value = NAN, .left = (int32_t)i - 1, .column = 0};
    }
    self->num_trees = trees;
    for (Py_ssize_t g = 0; g < k; g++) {
        float score = ((const float *)base.buf)[g];
        self->bases[g] = transform == TRANSFORM_SIGMOID ? logistic_margin(score) : score;
    }
    self->groups = k;
    self->transform = transform;
    ok = 0;
release_all:
    if (ok != 0) forest_clear(self);
    PyMem_Free(seen);
    PyMem_Free(stack);
    PyMem_Free(depth_of);
    if (groups.buf != NULL) PyBuffer_Release(&groups);
release_base:
    PyBuffer_Release(&base);
release_roots:
    PyBuffer_Release(&roots);
release_default:
    PyBuffer_Release(&default_left);
release_value:
    PyBuffer_Release(&value);
release_feature:
    PyBuffer_Release(&feature);
release_left:
    PyBuffer_Release(&left);
    return ok;
}

/* One step down a tree. A NaN compares false, so !(x < split) sends it right; XOR with (NaN
 * and default-left) turns that into left: XGBoost's default child. Rows without a NaN skip
 * that (`nan_possible` is a constant where this is inlined). */
static inline __attribute__((always_inline)) const Node *step(const Node *nodes, const Node *node,
                                                              const float *row,
                                                              const int nan_possible) {
    float x = row[node->column & ~DEFAULT_LEFT];
    uint32_t right = (uint32_t)!(x < node->value);
    if (nan_possible) right ^= (uint32_t)(x != x) & (node->column >> 31);
    return nodes + (node->left + (int32_t)right);
}

/* margins[(i - start) * groups + g] += the tree's leaf value for rows i in [start, end), g the
 * tree's group, LOCKSTEP rows at a time. */
static inline __attribute__((always_inline)) void add_tree(const Forest *f, Py_ssize_t t,
                                                           const float *rows, Py_ssize_t start,
                                                           Py_ssize_t end, float *margins,
                                                           const int nan_possible) {
    const Node *nodes = f->nodes, *root = f->nodes + f->roots[t];
    const int32_t depth = f->depths[t];
    const Py_ssize_t width = f->num_features, k = f->groups;
    float *margin = margins + f->tree_groups[t] - start * k;
    Py_ssize_t i = start;
    for (; i + LOCKSTEP <= end; i += LOCKSTEP) {
        const Node *at[LOCKSTEP];
        const float *row[LOCKSTEP];
        for (int j = 0; j < LOCKSTEP; j++) {
            at[j] = root;
            row[j] = rows + (i + j) * width;
        }
        for (int32_t level = 0; level < depth; level++)
            for (int j = 0; j < LOCKSTEP; j++) at[j] = step(nodes, at[j], row[j], nan_possible);
        for (int j = 0; j < LOCKSTEP; j++) margin[(i + j) * k] += f->leaf_values[at[j] - nodes];
    }
    for (; i < end; i++) {
        const Node *at = root;
        for (int32_t level = 0; level < depth; level++)
            at = step(nodes, at, rows + i * width, nan_possible);
        margin[i * k] += f->leaf_values[at - nodes];
    }
}

/* The SIMD kernels: margins[i * groups + g] = the base margins plus each tree's leaf in tree
 * order (the scalar code's float32 sums, in the same order) for rows i < count, count a multiple
 * of the lanes and at most ROW_BLOCK; each lane finds one row's leaf in a padded tree (see
 * Forest) with the scalar step's decisions (NaN and default left included), sixteen rows per
 * register (AVX-512) or eight (AVX2). Rows of up to BLOCK_FEATURES features are first copied by
 * feature; then the top LEAF_BITS_LEVELS levels of a tree (all of a shallower one) find each
 * row's slot at the next level (its leaf) with one compare per split and no gather
 * (leaves_avx512, leaves_avx2), and the levels below are walked down: `depth` - 5 times, gather
 * the split's feature of the row, compare it with the split's condition and go to 2p + 1 (left)
 * or 2p + 2 (walk_avx512, walk_avx2; wider rows are walked from the root, the top levels'
 * splits from registers by a permutation). Five levels by bits and the rest walked was faster
 * than six by bits (63 compares, two 32-bit words of leaves) for trees of 6-10 levels. Blocks of
 * ROW_BLOCK rows take each tree in four registers at once (independent chains). Only compares,
 * integer index arithmetic and float32 additions: no contraction is possible.
 * `lanes` holds the margins by group (margins itself when there is one group). */
#define AVX512_LANES 16
#define AVX512_TABLE_LEVELS 5 /* a two-register table holds slots 0-31 */
#define BLOCK_FEATURES 64     /* rows up to this wide are copied by feature (16 KiB of stack) */
#define AVX2_LANES 8
#define AVX2_TABLE_LEVELS 3 /* a one-register table holds slots 0-7 */
#define LEAF_BITS_LEVELS 5  /* a tree's top five levels (32 leaves) by bits (left_leaves) */

#ifdef X86_KERNELS
/* Each lane's margins start from the bases; afterwards the row-major margins of the lanes. */
static void lanes_start(const Forest *f, Py_ssize_t count, float *lanes) {
    for (Py_ssize_t g = 0; g < f->groups; g++)
        for (Py_ssize_t i = 0; i < count; i++) lanes[g * ROW_BLOCK + i] = f->bases[g];
}

static void lanes_end(const Forest *f, Py_ssize_t count, const float *lanes, float *margins) {
    if (lanes == margins) return;
    for (Py_ssize_t i = 0; i < count; i++)
        for (Py_ssize_t g = 0; g < f->groups; g++)
            margins[i * f->groups + g] = lanes[g * ROW_BLOCK + i];
}

/* For a padded tree of depth D <= LEAF_BITS_LEVELS and its split slot p: the bits of the leaves
 * (leaf i, left to right, at bit i) of p's left subtree, which no row that goes right at p
 * reaches. A row's leaf is the leftmost that no split it goes right at rules out (the
 * QuickScorer algorithm): one compare per split of the whole tree, with no chain of loads. The
 * top LEAF_BITS_LEVELS levels of a deeper tree are such a tree, whose leaves are the slots of
 * the next level. */
static uint32_t left_leaves[LEAF_BITS_LEVELS + 1][32];

static void left_leaves_init(void) {
    for (int depth = 0; depth <= LEAF_BITS_LEVELS; depth++)
        for (int p = 0; p < (1 << depth) - 1; p++) {
            int level = 0;
            while ((2 << level) - 1 <= p) level++; /* at most LEAF_BITS_LEVELS steps */
            const int span = 1 << (depth - level), first = (p + 1 - (1 << level)) * span;
            left_leaves[depth][p] = 0;
            for (int leaf = first; leaf < first + span / 2; leaf++)
                left_leaves[depth][p] |= 1u << leaf;
        }
}

/* at[v]: each lane's leaf slot in the tree (see left_leaves), its row's features in `block` by
 * feature (ROW_BLOCK floats each). Going right at a split: !(x < split) (NLT_UQ: a NaN goes
 * right, as do all values at a padding split on NaN), or, on a feature with a NaN in the block
 * (`feature_nan`) where a NaN goes left, x >= split (GE_OQ: a NaN does not; the same for other
 * values, as no split's condition is NaN: see pad_trees).
 * The lowest bit left is the leaf: the exponent of its float (exact: a power of two; bit 31
 * converts to -2^31, whose exponent is 31 too). */
static inline __attribute__((always_inline, target("avx512f"))) void
leaves_avx512(const uint32_t *columns, const float *values, int32_t depth, const float *block,
              const uint8_t *feature_nan, __m512i *at, const int vectors, const int nan_possible) {
    const int32_t first_leaf = (1 << depth) - 1;
    __m512i reachable[4];
#pragma GCC unroll 4
    for (int v = 0; v < vectors; v++) reachable[v] = _mm512_set1_epi32(-1);
    for (int32_t p = 0; p < first_leaf; p++) {
        const uint32_t feature = columns[p] & ~DEFAULT_LEFT;
        const float *x_at = block + feature * ROW_BLOCK;
        const int nan_goes_left =
            nan_possible && feature_nan[feature] && (columns[p] & DEFAULT_LEFT);
        const __m512 split = _mm512_set1_ps(values[p]);
        const __m512i ruled_out = _mm512_set1_epi32((int32_t)left_leaves[depth][p]);
#pragma GCC unroll 4
        for (int v = 0; v < vectors; v++) {
            const __m512 x = _mm512_loadu_ps(x_at + v * AVX512_LANES);
            const __mmask16 right = nan_goes_left ? _mm512_cmp_ps_mask(x, split, _CMP_GE_OQ)
                                                  : _mm512_cmp_ps_mask(x, split, _CMP_NLT_UQ);
            reachable[v] = _mm512_mask_andnot_epi32(reachable[v], right, ruled_out, reachable[v]);
        }
    }
#pragma GCC unroll 4
    for (int v = 0; v < vectors; v++) {
        const __m512i lowest =
            _mm512_and_si512(reachable[v], _mm512_sub_epi32(_mm512_setzero_si512(), reachable[v]));
        const __m512i exponent = _mm512_and_si512(
            _mm512_srli_epi32(_mm512_castps_si512(_mm512_cvtepi32_ps(lowest)), 23),
            _mm512_set1_epi32(0xff));
        at[v] = _mm512_add_epi32(exponent, _mm512_set1_epi32(first_leaf - 127));
    }
}

/* at[v]: each lane's leaf slot, walking down the tree level by level from `level`'s slot at[v]
 * (trees deeper than LEAF_BITS_LEVELS below their top levels, or rows wider than
 * BLOCK_FEATURES from the root): the top levels' splits from two registers, the rest and the
 * row's value gathered. */
static inline __attribute__((always_inline, target("avx512f"))) void
walk_avx512(const uint32_t *columns, const float *values, int32_t depth, const float *rows,
            Py_ssize_t width, int32_t level, __m512i *at, const int vectors,
            const int nan_possible) {
    int32_t offsets[AVX512_LANES];
    for (int j = 0; j < AVX512_LANES; j++) offsets[j] = (int32_t)(j * width);
    const __m512i row_offsets = _mm512_loadu_si512(offsets);
    const __m512i one = _mm512_set1_epi32(1), two = _mm512_set1_epi32(2);
    const __m512i feature_bits = _mm512_set1_epi32((int32_t)~DEFAULT_LEFT);
    const __m512i columns_low = _mm512_loadu_si512(columns);
    const __m512i columns_high = _mm512_loadu_si512(columns + 16);
    const __m512 values_low = _mm512_loadu_ps(values), values_high = _mm512_loadu_ps(values + 16);
    for (; level < depth; level++) {
#pragma GCC unroll 4
        for (int v = 0; v < vectors; v++) {
            __m512i column;
            __m512 split;
            if (level < AVX512_TABLE_LEVELS) {
                column = _mm512_permutex2var_epi32(columns_low, at[v], columns_high);
                split = _mm512_permutex2var_ps(values_low, at[v], values_high);
            } else {
                column = _mm512_i32gather_epi32(at[v], columns, 4);
                split = _mm512_i32gather_ps(at[v], values, 4);
            }
            const __m512i cell =
                _mm512_add_epi32(row_offsets, _mm512_and_si512(column, feature_bits));
            const __m512 x = _mm512_i32gather_ps(cell, rows + v * AVX512_LANES * width, 4);
            __mmask16 left = _mm512_cmp_ps_mask(x, split, _CMP_LT_OQ);
            if (nan_possible)
                left |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q) &
                        _mm512_cmplt_epi32_mask(column, _mm512_setzero_si512());
            const __m512i right = _mm512_add_epi32(_mm512_add_epi32(at[v], at[v]), two);
            at[v] = _mm512_mask_sub_epi32(right, left, right, one);
        }
    }
}

/* The AVX-512 kernel's trees: the rows copied by feature into `block` once (when they are
 * narrow enough), then for each tree every lane's leaf slot, by leaves_avx512 and then
 * walk_avx512 below its top levels, its value (from two registers for a tree of up to five
 * levels) added to the lane's margin. */
static inline __attribute__((always_inline, target("avx512f"))) void
trees_avx512(const Forest *f, const float *rows, float *lanes, const int vectors,
             const int nan_possible) {
    const Py_ssize_t width = f->num_features;
    float block[BLOCK_FEATURES * ROW_BLOCK];
    const int by_feature = width <= BLOCK_FEATURES;
    uint8_t feature_nan[BLOCK_FEATURES]; /* a NaN in the block's feature */
    for (Py_ssize_t feature = 0; by_feature && feature < width; feature++) {
        int32_t cells[AVX512_LANES];
        for (int j = 0; j < AVX512_LANES; j++) cells[j] = (int32_t)(j * width + feature);
        __mmask16 nan = 0;
#pragma GCC unroll 4
        for (int v = 0; v < vectors; v++) {
            const __m512 x = _mm512_i32gather_ps(_mm512_loadu_si512(cells),
                                                 rows + v * AVX512_LANES * width, 4);
            if (nan_possible) nan |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
            _mm512_storeu_ps(block + feature * ROW_BLOCK + v * AVX512_LANES, x);
        }
        feature_nan[feature] = nan != 0;
    }
    for (Py_ssize_t t = 0; t < f->num_trees; t++) {
        const uint32_t *columns = f->simd_columns + f->simd_offsets[t];
        const float *values = f->simd_values + f->simd_offsets[t];
        const int32_t depth = f->depths[t], first_leaf = (1 << depth) - 1;
        __m512i at[4] = {0}; /* the root's slot */
        /* the top levels by leaf bits (their "leaves" are the slots of the next level), the
         * rest walked */
        const int32_t top = by_feature ? (depth < LEAF_BITS_LEVELS ? depth : LEAF_BITS_LEVELS) : 0;
        if (top > 0)
            leaves_avx512(columns, values, top, block, feature_nan, at, vectors, nan_possible);
        if (top < depth)
            walk_avx512(columns, values, depth, rows, width, top, at, vectors, nan_possible);
        float *margin = lanes + f->tree_groups[t] * ROW_BLOCK;
        const __m512 leaves_low = _mm512_loadu_ps(values + first_leaf);
        const __m512 leaves_high = _mm512_loadu_ps(values + first_leaf + 16);
#pragma GCC unroll 4
        for (int v = 0; v < vectors; v++) {
            const __m512 leaf =
                depth <= AVX512_TABLE_LEVELS
                    ? _mm512_permutex2var_ps(leaves_low,
                                             _mm512_sub_epi32(at[v], _mm512_set1_epi32(first_leaf)),
                                             leaves_high)
                    : _mm512_i32gather_ps(at[v], values, 4);
            float *sum = margin + v * AVX512_LANES;
            _mm512_storeu_ps(sum, _mm512_add_ps(_mm512_loadu_ps(sum), leaf));
        }
    }
}

/* As leaves_avx512, eight rows per register. */
static inline __attribute__((always_inline, target("avx2"))) void
leaves_avx2(const uint32_t *columns, const float *values, int32_t depth, const float *block,
            const uint8_t *feature_nan, __m256i *at, const int vectors, const int nan_possible) {
    const int32_t first_leaf = (1 << depth) - 1;
    __m256i reachable[4];
#pragma GCC unroll 4
    for (int v = 0; v < vectors; v++) reachable[v] = _mm256_set1_epi32(-1);
    for (int32_t p = 0; p < first_leaf; p++) {
        const uint32_t feature = columns[p] & ~DEFAULT_LEFT;
        const float *x_at = block + feature * ROW_BLOCK;
        const int nan_goes_left =
            nan_possible && feature_nan[feature] && (columns[p] & DEFAULT_LEFT);
        const __m256 split = _mm256_set1_ps(values[p]);
        const __m256i ruled_out = _mm256_set1_epi32((int32_t)left_leaves[depth][p]);
#pragma GCC unroll 4
        for (int v = 0; v < vectors; v++) {
            const __m256 x = _mm256_loadu_ps(x_at + v * AVX2_LANES);
            const __m256 right = nan_goes_left ? _mm256_cmp_ps(x, split, _CMP_GE_OQ)
                                               : _mm256_cmp_ps(x, split, _CMP_NLT_UQ);
            reachable[v] = _mm256_andnot_si256(
                _mm256_and_si256(_mm256_castps_si256(right), ruled_out), reachable[v]);
        }
    }
#pragma GCC unroll 4
    for (int v = 0; v < vectors; v++) {
        const __m256i lowest =
            _mm256_and_si256(reachable[v], _mm256_sub_epi32(_mm256_setzero_si256(), reachable[v]));
        const __m256i exponent = _mm256_and_si256(
            _mm256_srli_epi32(_mm256_castps_si256(_mm256_cvtepi32_ps(lowest)), 23),
            _mm256_set1_epi32(0xff));
        at[v] = _mm256_add_epi32(exponent, _mm256_set1_epi32(first_leaf - 127));
    }
}

/* As walk_avx512, eight rows per register, the top three levels' splits from one register. */
static inline __attribute__((always_inline, target("avx2"))) void
walk_avx2(const uint32_t *columns, const float *values, int32_t depth, const float *rows,
          Py_ssize_t width, int32_t level, __m256i *at, const int vectors, const int nan_possible) {
    int32_t offsets[AVX2_LANES];
    for (int j = 0; j < AVX2_LANES; j++) offsets[j] = (int32_t)(j * width);
    const __m256i row_offsets = _mm256_loadu_si256((const __m256i *)offsets);
    const __m256i two = _mm256_set1_epi32(2);
    const __m256i feature_bits = _mm256_set1_epi32((int32_t)~DEFAULT_LEFT);
    const __m256i columns_table = _mm256_loadu_si256((const __m256i *)columns);
    const __m256 values_table = _mm256_loadu_ps(values);
    for (; level < depth; level++) {
#pragma GCC unroll 4
        for (int v = 0; v < vectors; v++) {
            __m256i column;
            __m256 split;
            if (level < AVX2_TABLE_LEVELS) {
                column = _mm256_permutevar8x32_epi32(columns_table, at[v]);
                split = _mm256_permutevar8x32_ps(values_table, at[v]);
            } else {
                column = _mm256_i32gather_epi32((const int *)columns, at[v], 4);
                split = _mm256_i32gather_ps(values, at[v], 4);
            }
            const __m256i cell =
                _mm256_add_epi32(row_offsets, _mm256_and_si256(column, feature_bits));
            const __m256 x = _mm256_i32gather_ps(rows + v * AVX2_LANES * width, cell, 4);
            __m256i left = _mm256_castps_si256(_mm256_cmp_ps(x, split, _CMP_LT_OQ));
            if (nan_possible)
                left = _mm256_or_si256(
                    left, _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)),
                                           _mm256_srai_epi32(column, 31)));
            /* left is -1 where the row goes left */
            at[v] = _mm256_add_epi32(_mm256_add_epi32(at[v], at[v]), _mm256_add_epi32(two, left));
        }
    }
}

/* As trees_avx512, eight rows per register. */
static inline __attribute__((always_inline, target("avx2"))) void
trees_avx2(const Forest *f, const float *rows, float *lanes, const int vectors,
           const int nan_possible) {
    const Py_ssize_t width = f->num_features;
    float block[BLOCK_FEATURES * ROW_BLOCK];
    const int by_feature = width <= BLOCK_FEATURES;
    uint8_t feature_nan[BLOCK_FEATURES]; /* a NaN in the block's feature */
    for (Py_ssize_t feature = 0; by_feature && feature < width; feature++) {
        int32_t cells[AVX2_LANES];
        for (int j = 0; j < AVX2_LANES; j++) cells[j] = (int32_t)(j * width + feature);
        int nan = 0;
#pragma GCC unroll 4
        for (int v = 0; v < vectors; v++) {
            const __m256 x = _mm256_i32gather_ps(rows + v * AVX2_LANES * width,
                                                 _mm256_loadu_si256((const __m256i *)cells), 4);
            if (nan_possible) nan |= _mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
            _mm256_storeu_ps(block + feature * ROW_BLOCK + v * AVX2_LANES, x);
        }
        feature_nan[feature] = nan != 0;
    }
    for (Py_ssize_t t = 0; t < f->num_trees; t++) {
        const uint32_t *columns = f->simd_columns + f->simd_offsets[t];
        const float *values = f->simd_values + f->simd_offsets[t];
        const int32_t depth = f->depths[t], first_leaf = (1 << depth) - 1;
        __m256i at[4] = {0}; /* the root's slot */
        const int32_t top = by_feature ? (depth < LEAF_BITS_LEVELS ? depth : LEAF_BITS_LEVELS) : 0;
        if (top > 0)
            leaves_avx2(columns, values, top, block, feature_nan, at, vectors, nan_possible);
        if (top < depth)
            walk_avx2(columns, values, depth, rows, width, top, at, vectors, nan_possible);
        float *margin = lanes + f->tree_groups[t] * ROW_BLOCK;
        const __m256 leaves = _mm256_loadu_ps(values + first_leaf);
#pragma GCC unroll 4
        for (int v = 0; v < vectors; v++) {
            const __m256 leaf =
                depth <= AVX2_TABLE_LEVELS
                    ? _mm256_permutevar8x32_ps(
                          leaves, _mm256_sub_epi32(at[v], _mm256_set1_epi32(first_leaf)))
                    : _mm256_i32gather_ps(values, at[v], 4);
            float *sum = margin + v * AVX2_LANES;
            _mm256_storeu_ps(sum, _mm256_add_ps(_mm256_loadu_ps(sum), leaf));
        }
    }
}

/* A kernel's entry: groups of four registers of rows walk the trees together, then single
 * registers (count is a multiple of the lanes). */
#define MARGINS_KERNEL(name, target_isa, walk, lane_count)                                      \
    __attribute__((target(target_isa))) static void name(const Forest *f, const float *rows,      \
                                                         Py_ssize_t count, float *margins,        \
                                                         float *lanes, int nan_possible) {        \
        lanes = f->groups == 1 ? margins : lanes;                                                 \
        lanes_start(f, count, lanes);                                                             \
        Py_ssize_t i = 0;                                                                         \
        for (; i + 4 * (lane_count) <= count; i += 4 * (lane_count)) {                            \
            if (nan_possible)                                                                     \
                walk(f, rows + i * f->num_features, lanes + i, 4, 1);                             \
            else                                                                                  \
                walk(f, rows + i * f->num_features, lanes + i, 4, 0);                             \
        }                                                                                         \
        for (; i < count; i += (lane_count)) walk(f, rows + i * f->num_features, lanes + i, 1, 1); \
        lanes_end(f, count, lanes, margins);                                                      \
    }

MARGINS_KERNEL(margins_avx512, "avx512f", trees_avx512, AVX512_LANES)
MARGINS_KERNEL(margins_avx2, "avx2", trees_avx2, AVX2_LANES)
#endif

typedef void (*MarginsKernel)(const Forest *, const float *, Py_ssize_t, float *, float *, int);
#ifdef X86_KERNELS
static const MarginsKernel kernel_margins[KERNEL_COUNT] = {NULL, margins_avx2, margins_avx512};
#else
static const MarginsKernel kernel_margins[KERNEL_COUNT] = {NULL, NULL, NULL}; /* none runs */
#endif

/* The margins of a block's first rows (count <= ROW_BLOCK) by a SIMD kernel: its whole registers
 * of rows, then the last few rows with zero rows after them in one more register (an AVX2 one
 * for up to eight rows: faster than half-empty AVX-512), when the rows are narrow enough to copy
 * on the stack (margins and lanes have room for ROW_BLOCK rows: the whole registers leave room
 * for one more). How many rows it did. */
static Py_ssize_t simd_margins(const Forest *f, Kernel kernel, const float *rows, Py_ssize_t count,
                               float *margins, float *lanes, int nan_possible) {
    const Py_ssize_t width = f->num_features, register_rows = kernel_lanes[kernel];
    const Py_ssize_t whole = count / register_rows * register_rows;
    if (whole > 0) kernel_margins[kernel](f, rows, whole, margins, lanes, nan_possible);
    const Py_ssize_t left_over = count - whole;
    const Kernel last =
        kernel == KERNEL_AVX512 && left_over <= AVX2_LANES && kernel_runs[KERNEL_AVX2]
            ? KERNEL_AVX2
            : kernel;
    if (left_over < kernel_padded_min_rows[last] || width > BLOCK_FEATURES) return whole;
    float padded[AVX512_LANES * BLOCK_FEATURES];
    memset(padded, 0, (size_t)(kernel_lanes[last] * width) * sizeof(float));
    memcpy(padded, rows + whole * width, (size_t)(left_over * width) * sizeof(float));
    kernel_margins[last](f, padded, kernel_lanes[last], margins + whole * f->groups, lanes,
                         nan_possible);
    return count;
}

/* The rows' outputs, ROW_BLOCK rows at a time through `margins` (ROW_BLOCK x groups floats;
 * `lanes` as many, for the SIMD kernels): the kernel's whole registers of rows, the rest
 * scalar. */
static void predict_rows(const Forest *f, Kernel kernel, const float *rows, Py_ssize_t count,
                         float *out, float *margins, float *lanes) {
    const Py_ssize_t width = f->num_features, k = f->groups;
    for (Py_ssize_t start = 0; start < count; start += ROW_BLOCK) {
        Py_ssize_t end = start + ROW_BLOCK < count ? start + ROW_BLOCK : count;
        int nan_possible = 0;
        for (Py_ssize_t v = start * width; v < end * width; v++) nan_possible |= rows[v] != rows[v];
        const Py_ssize_t simd =
            kernel == KERNEL_SCALAR
                ? 0
                : simd_margins(f, kernel, rows + start * width, end - start, margins, lanes,
                               nan_possible);
        for (Py_ssize_t i = simd; i < end - start; i++)
            for (Py_ssize_t g = 0; g < k; g++) margins[i * k + g] = f->bases[g];
        /* tree order: XGBoost's order of the float32 sums */
        for (Py_ssize_t t = 0; simd < end - start && t < f->num_trees; t++) {
            if (nan_possible)
                add_tree(f, t, rows, start + simd, end, margins + simd * k, 1);
            else
                add_tree(f, t, rows, start + simd, end, margins + simd * k, 0);
        }
        for (Py_ssize_t i = 0; i < end - start; i++) {
            float *margin = margins + i * k;
            switch (f->transform) {
            case TRANSFORM_SIGMOID:
                out[start + i] = sigmoid_of(margin[0]);
                break;
            case TRANSFORM_ARGMAX:
                out[start + i] = argmax(margin, k);
                break;
            case TRANSFORM_SOFTPROB:
                softmax(margin, k); /* the probabilities are the outputs: */
                __attribute__((fallthrough));
            default:
                memcpy(out + (start + i) * k, margin, (size_t)k * sizeof(float));
            }
        }
    }
}

static PyObject *forest_predict(Forest *self, PyObject *args) {
    PyObject *rows_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OO", &rows_obj, &out_obj)) return NULL;
    if (self->nodes == NULL) {
        PyErr_SetString(PyExc_ValueError, "the forest was not initialised");
        return NULL;
    }
    Py_buffer rows, out;
    if (PyObject_GetBuffer(rows_obj, &rows, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&rows);
        return NULL;
    }
    PyObject *result = NULL;
    float *margins = NULL;
    Py_ssize_t per_row = self->transform == TRANSFORM_SIGMOID || self->transform == TRANSFORM_ARGMAX
                             ? 1
                             : self->groups;
    Py_ssize_t count = out.len / 4 / per_row;
    if (rows.itemsize != 4 || strcmp(rows.format, "f") != 0 || out.itemsize != 4 ||
        strcmp(out.format, "f") != 0 || out.len % (per_row * 4) != 0 ||
        rows.len % (self->num_features * 4) != 0 || rows.len / 4 / self->num_features != count) {
        PyErr_SetString(PyExc_ValueError,
                        "predict takes float32 rows of num_features values and float32 out "
                        "values for as many rows (one per group for softmax probabilities)");
        goto done;
    }
    margins = PyMem_Malloc((size_t)(2 * ROW_BLOCK * self->groups) * sizeof(float));
    if (margins == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    float *lanes = margins + ROW_BLOCK * self->groups;
    Kernel kernel = self->kernel;
    if (count * self->num_trees >= GIL_FREE_WORK) {
        Py_BEGIN_ALLOW_THREADS predict_rows(self, kernel, rows.buf, count, out.buf, margins, lanes);
        Py_END_ALLOW_THREADS
    } else {
        predict_rows(self, kernel, rows.buf, count, out.buf, margins, lanes);
    }
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(margins);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *forest_get_kernel(Forest *self, void *closure) {
    return PyUnicode_FromString(kernel_names[self->kernel]);
}

/* Which kernel predicts: one of KERNELS, a SIMD one only where the trees are padded. */
static int forest_set_kernel(Forest *self, PyObject *value, void *closure) {
    const char *name = value != NULL ? PyUnicode_AsUTF8(value) : NULL;
    if (name == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "the kernel cannot be deleted");
        return -1;
    }
    for (int kernel = 0; kernel < KERNEL_COUNT; kernel++) {
        if (strcmp(name, kernel_names[kernel]) != 0) continue;
        if (!kernel_runs[kernel]) {
            PyErr_Format(PyExc_ValueError, "this CPU does not run the %s kernel", name);
            return -1;
        }
        if (kernel != KERNEL_SCALAR && self->simd_offsets == NULL) {
            PyErr_Format(PyExc_ValueError,
                         "the %s kernel takes trees of at most %d levels (and %d features), "
                         "on an initialised forest",
                         name, SIMD_MAX_DEPTH, SIMD_MAX_FEATURES);
            return -1;
        }
        self->kernel = kernel;
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "no kernel %R", value);
    return -1;
}

static PyGetSetDef forest_getset[] = {
    {"kernel", (getter)forest_get_kernel, (setter)forest_set_kernel,
     "The code that walks the trees of large batches: 'scalar', 'avx2' or 'avx512'.", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyMethodDef forest_methods[] = {
    {"predict", (PyCFunction)forest_predict, METH_VARARGS,
     "predict(rows, out): each row's prediction into out (float32, one per row)."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject ForestType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "infermodes.predict._trees.Forest",
    .tp_basicsize = sizeof(Forest),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A tree ensemble evaluated as XGBoost's CPU predictor does.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)forest_init,
    .tp_dealloc = (destructor)forest_dealloc,
    .tp_methods = forest_methods,
    .tp_getset = forest_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_trees", NULL, -1, NULL,
                                    NULL,                  NULL,     NULL, NULL};

PyMODINIT_FUNC PyInit__trees(void) {
    kernel_runs[KERNEL_SCALAR] = 1;
#ifdef X86_KERNELS
    __builtin_cpu_init();
    left_leaves_init();
    kernel_runs[KERNEL_AVX2] = __builtin_cpu_supports("avx2") != 0;
    kernel_runs[KERNEL_AVX512] = __builtin_cpu_supports("avx512f") != 0;
#endif
    if (PyType_Ready(&ForestType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_ssize_t runs = 0, at = 0;
    for (int kernel = 0; kernel < KERNEL_COUNT; kernel++) runs += kernel_runs[kernel];
    PyObject *kernels = PyTuple_New(runs);
    for (int kernel = 0; kernels != NULL && kernel < KERNEL_COUNT; kernel++) {
        if (!kernel_runs[kernel]) continue;
        PyObject *name = PyUnicode_FromString(kernel_names[kernel]);
        if (name == NULL)
            Py_CLEAR(kernels);
        else
            PyTuple_SET_ITEM(kernels, at++, name);
    }
    int added = kernels != NULL && PyModule_AddObjectRef(m, "KERNELS", kernels) == 0 &&
                PyModule_AddObjectRef(m, "Forest", (PyObject *)&ForestType) == 0;
    Py_XDECREF(kernels);
    if (!added) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
