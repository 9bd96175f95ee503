/* chain._merkle: the RFC 6962 / RFC 9162 Merkle tree's hashing in C, on OpenSSL's libcrypto.
 *
 * leaf = SHA-256(0x00 || data), node = SHA-256(0x01 || left || right). The functions
 * mirror chain/_merkle_py.py exactly (same arguments, same results, same errors); chain/merkle.py
 * picks this module when it is built and that one otherwise. The hashing runs without the GIL.
 *
 * OpenSSL's low-level SHA256_Init/Update/Final are used on purpose: they call the block
 * function directly (SHA-NI where the CPU has it), with no provider look-up per call. They
 * are deprecated in OpenSSL 3 but present; EVP would add a fixed cost to every 65-byte node.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/opensslv.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <string.h>

#define HASH_SIZE 32
#define MAX_LEVEL 63          /* sizes and indices are below 2**63 (PostgreSQL bigint) */
#define MAX_SUBTREE_LEVEL 16  /* subtree(): at most 65,536 leaf hashes at once */

static const unsigned char LEAF_PREFIX = 0x00;

static inline void
leaf_hash(const unsigned char *data, size_t len, unsigned char *out)
{
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, &LEAF_PREFIX, 1);
    SHA256_Update(&c, data, len);
    SHA256_Final(out, &c);
}

/* ``out`` may be ``left`` or ``right``: both are copied first. */
static inline void
node_hash(const unsigned char *left, const unsigned char *right, unsigned char *out)
{
    unsigned char buf[1 + 2 * HASH_SIZE];
    SHA256_CTX c;
    buf[0] = 0x01;
    memcpy(buf + 1, left, HASH_SIZE);
    memcpy(buf + 1 + HASH_SIZE, right, HASH_SIZE);
    SHA256_Init(&c);
    SHA256_Update(&c, buf, sizeof buf);
    SHA256_Final(out, &c);
}

typedef struct {
    int level;
    uint64_t index;
    unsigned char hash[HASH_SIZE];
} node_rec;

/* A non-negative Python int below 2**63, or -1 with an exception set. */
static int
as_u63(PyObject *obj, const char *what, uint64_t *out)
{
    unsigned long long v;
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int", what);
        return -1;
    }
    v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be between 0 and 2**63 - 1", what);
        return -1;
    }
    if (v > (unsigned long long)INT64_MAX) {
        PyErr_Format(PyExc_ValueError, "%s must be between 0 and 2**63 - 1", what);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

static int
popcount64(uint64_t v)
{
    int n = 0;
    while (v) {
        v &= v - 1;
        n++;
    }
    return n;
}

PyDoc_STRVAR(append_doc,
"append(size, roots, leaves, *, hashed=False, store_from=1)\n"
"--\n\n"
"Append leaves to the compact range (size, roots); return (leaf_hashes, nodes, roots).\n\n"
"``roots`` are the perfect-subtree roots of [0, size), largest first (one per set bit of\n"
"``size``). ``leaves`` are leaf data (hashed here as SHA-256(0x00 || data)) or, with\n"
"``hashed``, 32-byte leaf hashes. ``leaf_hashes`` is the new leaves' hashes concatenated;\n"
"``nodes`` is every perfect subtree the appends complete whose level is >= store_from,\n"
"as (level, index, hash), in the order they are completed; ``roots`` is the new range's.");

static PyObject *
merkle_append(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"size", "roots", "leaves", "hashed", "store_from", NULL};
    PyObject *size_obj, *roots_obj, *leaves_obj;
    int hashed = 0, store_from = 1;
    uint64_t size, n;
    PyObject *roots_seq = NULL, *leaves_tup = NULL, *out_hashes = NULL, *nodes = NULL,
             *new_roots = NULL, *result = NULL;
    const unsigned char **bufs = NULL;
    size_t *lens = NULL;
    node_rec *recs = NULL;
    unsigned char stack[MAX_LEVEL + 2][HASH_SIZE];
    int depth, i;
    Py_ssize_t nrecs = 0, k;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|$pi:append", kwlist, &size_obj,
                                     &roots_obj, &leaves_obj, &hashed, &store_from))
        return NULL;
    if (as_u63(size_obj, "size", &size) < 0)
        return NULL;
    if (store_from < 0) {
        PyErr_SetString(PyExc_ValueError, "store_from must be >= 0");
        return NULL;
    }
    roots_seq = PySequence_Fast(roots_obj, "roots must be a sequence of bytes");
    if (roots_seq == NULL)
        return NULL;
    depth = (int)PySequence_Fast_GET_SIZE(roots_seq);
    if (depth != popcount64(size)) {
        PyErr_Format(PyExc_ValueError, "size %llu needs %d roots, got %d",
                     (unsigned long long)size, popcount64(size), depth);
        goto done;
    }
    for (i = 0; i < depth; i++) {
        PyObject *r = PySequence_Fast_GET_ITEM(roots_seq, i);
        if (!PyBytes_Check(r) || PyBytes_GET_SIZE(r) != HASH_SIZE) {
            PyErr_Format(PyExc_ValueError, "subtree root must be %d bytes, got %R", HASH_SIZE, r);
            goto done;
        }
        memcpy(stack[i], PyBytes_AS_STRING(r), HASH_SIZE);
    }
    leaves_tup = PySequence_Tuple(leaves_obj);  /* holds every leaf while the GIL is released */
    if (leaves_tup == NULL)
        goto done;
    n = (uint64_t)PyTuple_GET_SIZE(leaves_tup);
    if (n > (uint64_t)INT64_MAX - size) {
        PyErr_SetString(PyExc_ValueError, "the tree would grow beyond 2**63 - 1 leaves");
        goto done;
    }
    bufs = PyMem_Malloc(sizeof(*bufs) * (n ? n : 1));
    lens = PyMem_Malloc(sizeof(*lens) * (n ? n : 1));
    /* n appends complete at most n + 63 nodes above the leaves, plus the n leaves */
    recs = PyMem_Malloc(sizeof(*recs) * (2 * n + MAX_LEVEL + 1));
    if (bufs == NULL || lens == NULL || recs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (k = 0; k < (Py_ssize_t)n; k++) {
        PyObject *leaf = PyTuple_GET_ITEM(leaves_tup, k);
        if (!PyBytes_Check(leaf)) {
            PyErr_Format(PyExc_TypeError, "leaf %zd must be bytes, got %.100s", k,
                         Py_TYPE(leaf)->tp_name);
            goto done;
        }
        if (hashed && PyBytes_GET_SIZE(leaf) != HASH_SIZE) {
            PyErr_Format(PyExc_ValueError, "leaf hash must be %d bytes, got %R", HASH_SIZE,
                         leaf);
            goto done;
        }
        bufs[k] = (const unsigned char *)PyBytes_AS_STRING(leaf);
        lens[k] = (size_t)PyBytes_GET_SIZE(leaf);
    }
    out_hashes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n * HASH_SIZE));
    if (out_hashes == NULL)
        goto done;

    Py_BEGIN_ALLOW_THREADS
    {
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(out_hashes);
        uint64_t j;
        for (j = 0; j < n; j++) {
            uint64_t index = size;
            int level = 0;
            unsigned char *node = out + j * HASH_SIZE;
            if (hashed)
                memcpy(node, bufs[j], HASH_SIZE);
            else
                leaf_hash(bufs[j], lens[j], node);
            if (store_from == 0) {
                recs[nrecs].level = 0;
                recs[nrecs].index = index;
                memcpy(recs[nrecs++].hash, node, HASH_SIZE);
            }
            memcpy(stack[depth], node, HASH_SIZE);
            while (index & 1) {  /* a right child: merge with the last root */
                node_hash(stack[depth - 1], stack[depth], stack[depth - 1]);
                depth--;
                level++;
                index >>= 1;
                if (level >= store_from) {
                    recs[nrecs].level = level;
                    recs[nrecs].index = index;
                    memcpy(recs[nrecs++].hash, stack[depth], HASH_SIZE);
                }
            }
            depth++;
            size++;
        }
    }
    Py_END_ALLOW_THREADS

    nodes = PyList_New(nrecs);
    if (nodes == NULL)
        goto done;
    for (k = 0; k < nrecs; k++) {
        PyObject *t = Py_BuildValue("(iKy#)", recs[k].level, (unsigned long long)recs[k].index,
                                    (const char *)recs[k].hash, (Py_ssize_t)HASH_SIZE);
        if (t == NULL)
            goto done;
        PyList_SET_ITEM(nodes, k, t);
    }
    new_roots = PyList_New(depth);
    if (new_roots == NULL)
        goto done;
    for (i = 0; i < depth; i++) {
        PyObject *r = PyBytes_FromStringAndSize((const char *)stack[i], HASH_SIZE);
        if (r == NULL)
            goto done;
        PyList_SET_ITEM(new_roots, i, r);
    }
    result = PyTuple_Pack(3, out_hashes, nodes, new_roots);

done:
    PyMem_Free(bufs);
    PyMem_Free(lens);
    PyMem_Free(recs);
    Py_XDECREF(roots_seq);
    Py_XDECREF(leaves_tup);
    Py_XDECREF(out_hashes);
    Py_XDECREF(nodes);
    Py_XDECREF(new_roots);
    return result;
}

PyDoc_STRVAR(subtree_doc,
"subtree(hashes, offset, level)\n"
"--\n\n"
"The hash of the perfect subtree over 2**level consecutive leaf hashes.\n\n"
"``hashes`` is leaf hashes concatenated (32 bytes each); the subtree's leaves are the\n"
"hashes number offset .. offset + 2**level - 1 of it. Requires 0 <= level <= 16.");

static PyObject *
merkle_subtree(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t offset;
    int level;
    uint64_t count, j;
    unsigned char *work;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "y*ni:subtree", &view, &offset, &level))
        return NULL;
    if (level < 0 || level > MAX_SUBTREE_LEVEL) {
        PyErr_Format(PyExc_ValueError, "level must be between 0 and %d, got %d",
                     MAX_SUBTREE_LEVEL, level);
        goto done;
    }
    count = (uint64_t)1 << level;
    if (view.len % HASH_SIZE != 0 || offset < 0 ||
        (uint64_t)offset + count > (uint64_t)(view.len / HASH_SIZE)) {
        PyErr_Format(PyExc_ValueError, "no subtree of %llu leaf hashes at %zd in %zd bytes",
                     (unsigned long long)count, offset, view.len);
        goto done;
    }
    if (level == 0) {
        result = PyBytes_FromStringAndSize((const char *)view.buf + offset * HASH_SIZE,
                                           HASH_SIZE);
        goto done;
    }
    work = PyMem_Malloc((size_t)(count / 2) * HASH_SIZE);
    if (work == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    {
        const unsigned char *src = (const unsigned char *)view.buf + offset * HASH_SIZE;
        for (j = 0; j < count / 2; j++)
            node_hash(src + 2 * j * HASH_SIZE, src + (2 * j + 1) * HASH_SIZE,
                      work + j * HASH_SIZE);
        for (count /= 2; count > 1; count /= 2)
            for (j = 0; j < count / 2; j++)
                node_hash(work + 2 * j * HASH_SIZE, work + (2 * j + 1) * HASH_SIZE,
                          work + j * HASH_SIZE);
    }
    Py_END_ALLOW_THREADS
    result = PyBytes_FromStringAndSize((const char *)work, HASH_SIZE);
    PyMem_Free(work);
done:
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef merkle_methods[] = {
    {"append", (PyCFunction)(void (*)(void))merkle_append, METH_VARARGS | METH_KEYWORDS,
     append_doc},
    {"subtree", merkle_subtree, METH_VARARGS, subtree_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef merkle_module = {
    PyModuleDef_HEAD_INIT, "chain._merkle",
    "RFC 6962 Merkle tree hashing in C (OpenSSL libcrypto); see chain/merkle.py.", -1,
    merkle_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__merkle(void)
{
    PyObject *m = PyModule_Create(&merkle_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddStringConstant(m, "OPENSSL_VERSION", OPENSSL_VERSION_TEXT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
