/* chain._smt: the compact sparse Merkle tree of chain/smt.py in C, on OpenSSL's libcrypto.
 *
 * empty subtree = 32 zero bytes; a subtree with one leaf = that leaf's hash;
 * leaf = SHA-256(0x00 || keyhash || valuehash); node = SHA-256(0x01 || left || right).
 * The type Tree mirrors chain/_smt_py.py's Tree exactly (same methods, same results, same
 * errors); chain/smt.py picks this one when it is built. The tree is changed in place: a
 * batch update rehashes each node on the paths from the changed leaves up once.
 *
 * Nodes and leaves live in two growable arrays. A reference is an int32: 0 is the empty
 * subtree, n > 0 node n - 1, n < 0 leaf -n - 1. A leaf whose slot is split by a batch that
 * also sets its own key is made again; its old entry stays unused until the tree is freed.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define H 32
#define DEPTH 256
#define REC (2 * H)

typedef struct { int32_t child[2]; unsigned char hash[H]; } node_t;
typedef struct { unsigned char key[H]; unsigned char value[H]; unsigned char hash[H]; } leaf_t;

typedef struct {
    PyObject_HEAD
    node_t *nodes; int32_t n_nodes, cap_nodes;
    leaf_t *leaves; int32_t n_leaves, cap_leaves;
    int32_t root;
    Py_ssize_t size;
} Tree;

static const unsigned char EMPTY[H] = {0};

static void
hash2(unsigned char prefix, const unsigned char *a, const unsigned char *b, unsigned char *out)
{
    unsigned char buf[1 + 2 * H];
    SHA256_CTX c;
    buf[0] = prefix;
    memcpy(buf + 1, a, H);
    memcpy(buf + 1 + H, b, H);
    SHA256_Init(&c);
    SHA256_Update(&c, buf, sizeof buf);
    SHA256_Final(out, &c);
}

static inline int
bit_at(const unsigned char *key, int depth)
{
    return (key[depth >> 3] >> (7 - (depth & 7))) & 1;
}

static inline const unsigned char *
ref_hash(const Tree *t, int32_t ref)
{
    if (ref == 0) return EMPTY;
    if (ref > 0) return t->nodes[ref - 1].hash;
    return t->leaves[-ref - 1].hash;
}

/* A new leaf (its reference), or 0 with MemoryError set. */
static int32_t
new_leaf(Tree *t, const unsigned char *rec)
{
    if (t->n_leaves == t->cap_leaves) {
        int32_t cap = t->cap_leaves ? t->cap_leaves * 2 : 1024;
        leaf_t *p = PyMem_Realloc(t->leaves, (size_t)cap * sizeof(leaf_t));
        if (p == NULL) { PyErr_NoMemory(); return 0; }
        t->leaves = p; t->cap_leaves = cap;
    }
    leaf_t *l = &t->leaves[t->n_leaves];
    memcpy(l->key, rec, H);
    memcpy(l->value, rec + H, H);
    hash2(0x00, l->key, l->value, l->hash);
    return -(++t->n_leaves);
}

/* A new node over two references (its reference), or 0 with MemoryError set. */
static int32_t
new_node(Tree *t, int32_t left, int32_t right)
{
    if (t->n_nodes == t->cap_nodes) {
        int32_t cap = t->cap_nodes ? t->cap_nodes * 2 : 1024;
        node_t *p = PyMem_Realloc(t->nodes, (size_t)cap * sizeof(node_t));
        if (p == NULL) { PyErr_NoMemory(); return 0; }
        t->nodes = p; t->cap_nodes = cap;
    }
    node_t *n = &t->nodes[t->n_nodes];
    n->child[0] = left; n->child[1] = right;
    hash2(0x01, ref_hash(t, left), ref_hash(t, right), n->hash);
    return ++t->n_nodes;
}

/* The first index in [lo, hi) of the sorted records whose bit ``depth`` is 1. */
static Py_ssize_t
first_one(const unsigned char *recs, Py_ssize_t lo, Py_ssize_t hi, int depth)
{
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (bit_at(recs + mid * REC, depth)) hi = mid; else lo = mid + 1;
    }
    return lo;
}

static int
first_difference(const unsigned char *a, const unsigned char *b)
{
    for (int i = 0; i < H; i++) {
        unsigned char x = a[i] ^ b[i];
        if (x) { int d = i * 8; while (!(x & 0x80)) { x <<= 1; d++; } return d; }
    }
    return DEPTH;
}

/* The subtree at ``depth`` holding exactly records [lo, hi); 0 with an exception set. */
static int32_t
build(Tree *t, const unsigned char *recs, Py_ssize_t lo, Py_ssize_t hi, int depth)
{
    if (hi - lo == 1) return new_leaf(t, recs + lo * REC);
    int split = first_difference(recs + lo * REC, recs + (hi - 1) * REC);
    Py_ssize_t mid = first_one(recs, lo, hi, split);
    int32_t left = build(t, recs, lo, mid, split + 1);
    if (left == 0) return 0;
    int32_t right = build(t, recs, mid, hi, split + 1);
    if (right == 0) return 0;
    int32_t ref = new_node(t, left, right);
    for (int d = split - 1; ref != 0 && d >= depth; d--) {
        ref = bit_at(recs + lo * REC, d) ? new_node(t, 0, ref) : new_node(t, ref, 0);
    }
    return ref;
}

/* ``ref`` (the subtree at ``depth``) with records [lo, hi) set; 0 with an exception set. */
static int32_t
put(Tree *t, int32_t ref, const unsigned char *recs, Py_ssize_t lo, Py_ssize_t hi, int depth)
{
    if (ref == 0) {
        t->size += hi - lo;
        return build(t, recs, lo, hi, depth);
    }
    if (ref < 0) {
        leaf_t *l = &t->leaves[-ref - 1];
        if (hi - lo == 1 && memcmp(l->key, recs + lo * REC, H) == 0) {
            memcpy(l->value, recs + lo * REC + H, H);
            hash2(0x00, l->key, l->value, l->hash);
            return ref;
        }
        /* merge the old leaf into the records, in key order, unless the batch sets it */
        Py_ssize_t at = lo;
        while (at < hi && memcmp(recs + at * REC, l->key, H) < 0) at++;
        if (at < hi && memcmp(recs + at * REC, l->key, H) == 0) {
            t->size += hi - lo - 1;
            return build(t, recs, lo, hi, depth);
        }
        Py_ssize_t n = hi - lo + 1;
        unsigned char *merged = PyMem_Malloc((size_t)n * REC);
        if (merged == NULL) { PyErr_NoMemory(); return 0; }
        memcpy(merged, recs + lo * REC, (size_t)(at - lo) * REC);
        memcpy(merged + (at - lo) * REC, l->key, H);
        memcpy(merged + (at - lo) * REC + H, l->value, H);
        memcpy(merged + (at - lo + 1) * REC, recs + at * REC, (size_t)(hi - at) * REC);
        t->size += hi - lo;
        int32_t out = build(t, merged, 0, n, depth);
        PyMem_Free(merged);
        return out;
    }
    Py_ssize_t mid = first_one(recs, lo, hi, depth);
    int32_t left = t->nodes[ref - 1].child[0], right = t->nodes[ref - 1].child[1];
    if (lo < mid && (left = put(t, left, recs, lo, mid, depth + 1)) == 0) return 0;
    if (mid < hi && (right = put(t, right, recs, mid, hi, depth + 1)) == 0) return 0;
    node_t *n = &t->nodes[ref - 1];  /* after the calls: the array may have moved */
    n->child[0] = left; n->child[1] = right;
    hash2(0x01, ref_hash(t, left), ref_hash(t, right), n->hash);
    return ref;
}

static PyObject *
Tree_update(Tree *t, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *recs = view.buf;
    Py_ssize_t n = view.len / REC;
    if (view.len % REC != 0) {
        PyBuffer_Release(&view);
        return PyErr_Format(PyExc_ValueError, "records must be 64 bytes each (key ‖ value)");
    }
    for (Py_ssize_t i = 1; i < n; i++) {
        if (memcmp(recs + (i - 1) * REC, recs + i * REC, H) >= 0) {
            PyBuffer_Release(&view);
            return PyErr_Format(PyExc_ValueError, "records must be in strictly increasing key order");
        }
    }
    if (n > 0) {
        int32_t root = put(t, t->root, recs, 0, n, 0);
        if (root == 0) { PyBuffer_Release(&view); return NULL; }
        t->root = root;
    }
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)ref_hash(t, t->root), H);
}

static PyObject *
Tree_root(Tree *t, PyObject *Py_UNUSED(ignored))
{
    return PyBytes_FromStringAndSize((const char *)ref_hash(t, t->root), H);
}

static Py_ssize_t
Tree_len(Tree *t)
{
    return t->size;
}

static int
key_arg(PyObject *arg, const unsigned char **key)
{
    if (!PyBytes_Check(arg) || PyBytes_GET_SIZE(arg) != H) {
        PyErr_SetString(PyExc_ValueError, "a key hash is 32 bytes");
        return -1;
    }
    *key = (const unsigned char *)PyBytes_AS_STRING(arg);
    return 0;
}

static PyObject *
Tree_get(Tree *t, PyObject *arg)
{
    const unsigned char *key;
    if (key_arg(arg, &key) < 0) return NULL;
    int32_t ref = t->root;
    for (int d = 0; ref > 0; d++) ref = t->nodes[ref - 1].child[bit_at(key, d)];
    if (ref < 0 && memcmp(t->leaves[-ref - 1].key, key, H) == 0)
        return PyBytes_FromStringAndSize((const char *)t->leaves[-ref - 1].value, H);
    Py_RETURN_NONE;
}

/* (siblings concatenated, top down; the other leaf's (key, value) on the path, or None) */
static PyObject *
Tree_prove(Tree *t, PyObject *arg)
{
    const unsigned char *key;
    unsigned char sib[DEPTH * H];
    int d = 0;
    if (key_arg(arg, &key) < 0) return NULL;
    int32_t ref = t->root;
    for (; ref > 0; d++) {
        int b = bit_at(key, d);
        memcpy(sib + d * H, ref_hash(t, t->nodes[ref - 1].child[1 - b]), H);
        ref = t->nodes[ref - 1].child[b];
    }
    PyObject *other;
    if (ref < 0 && memcmp(t->leaves[-ref - 1].key, key, H) != 0) {
        other = Py_BuildValue("(y#y#)", t->leaves[-ref - 1].key, (Py_ssize_t)H,
                              t->leaves[-ref - 1].value, (Py_ssize_t)H);
        if (other == NULL) return NULL;
    } else {
        other = Py_NewRef(Py_None);
    }
    return Py_BuildValue("(y#N)", sib, (Py_ssize_t)(d * H), other);
}

static int
collect(Tree *t, int32_t ref, PyObject *out)
{
    if (ref == 0) return 0;
    if (ref > 0) {
        if (collect(t, t->nodes[ref - 1].child[0], out) < 0) return -1;
        return collect(t, t->nodes[ref - 1].child[1], out);
    }
    PyObject *item = Py_BuildValue("(y#y#)", t->leaves[-ref - 1].key, (Py_ssize_t)H,
                                   t->leaves[-ref - 1].value, (Py_ssize_t)H);
    if (item == NULL) return -1;
    int rc = PyList_Append(out, item);
    Py_DECREF(item);
    return rc;
}

static PyObject *
Tree_items(Tree *t, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    if (collect(t, t->root, out) < 0) { Py_DECREF(out); return NULL; }
    return out;
}

static void
Tree_dealloc(Tree *t)
{
    PyMem_Free(t->nodes);
    PyMem_Free(t->leaves);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyMethodDef Tree_methods[] = {
    {"update", (PyCFunction)Tree_update, METH_O,
     "Set sorted 64-byte (keyhash ‖ valuehash) records; return the new root."},
    {"root", (PyCFunction)Tree_root, METH_NOARGS, "The root hash."},
    {"get", (PyCFunction)Tree_get, METH_O, "The value hash of a key hash, or None."},
    {"prove", (PyCFunction)Tree_prove, METH_O,
     "(siblings concatenated top down, the other leaf (key, value) or None)."},
    {"items", (PyCFunction)Tree_items, METH_NOARGS, "Every (keyhash, valuehash) in key order."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Tree_as_sequence = {.sq_length = (lenfunc)Tree_len};

static PyTypeObject TreeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "chain._smt.Tree",
    .tp_basicsize = sizeof(Tree),
    .tp_dealloc = (destructor)Tree_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The compact sparse Merkle tree, changed in place by batch updates.",
    .tp_methods = Tree_methods,
    .tp_as_sequence = &Tree_as_sequence,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef smt_module = {
    PyModuleDef_HEAD_INIT, "chain._smt",
    "The compact sparse Merkle tree's core in C (see chain/smt.py).", -1, NULL, NULL, NULL,
    NULL, NULL,
};

PyMODINIT_FUNC
PyInit__smt(void)
{
    if (PyType_Ready(&TreeType) < 0) return NULL;
    PyObject *m = PyModule_Create(&smt_module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Tree", (PyObject *)&TreeType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
