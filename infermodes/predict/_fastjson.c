/* The common numeric JSON bodies straight into float32 (infermodes/predict/fastjson.py wraps it).
 *
 * json.loads makes a Python float per value and a list per row (up to ~36 bytes of memory per
 * byte of body); this reads the same bodies into the caller's float32 matrix and nothing else.
 *
 * scan(data, out): the shapes ``{"instances": [ROW, ...]}``, ``{"features": [v, ...]}``,
 *   ``[ROW, ...]`` and ``[v, ...]`` (one row), where a ROW is ``[v, ...]`` or
 *   ``{"features": [v, ...]}`` and a v is a JSON number or null (NaN): (rows, width), and with
 *   ``out`` (a C-contiguous float32 buffer of rows x width values, from an earlier scan) the
 *   values written into it. None for anything else: another shape, another key or a second key,
 *   a string, an escape, an empty or ragged row, a value beyond float32, a byte outside JSON's
 *   grammar. The caller then decodes the body with the codecs, which give its answer or name
 *   its error; so this pass only has to be right about what it accepts. The GIL is released.
 * Numbers are read as json.loads reads them into float (correctly rounded to float64), then
 * rounded to float32 as numpy assigns them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_decimal.h"

typedef struct {
    const char *p, *end;
    float *out;           /* NULL: count only */
    Py_ssize_t capacity;  /* values out has room for */
    Py_ssize_t written;   /* values read so far */
    Py_ssize_t rows, width;
} Scanner;

/* JSON's whitespace (json's own: space, tab, LF, CR); the data ends with a NUL, never one. */
static inline void skip_space(Scanner *s) {
    while (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t') s->p++;
}

static inline int take(Scanner *s, char c) {
    skip_space(s);
    if (*s->p != c) return 0;
    s->p++;
    return 1;
}

/* A key: the exact bytes of ``"name"`` (no escapes: another spelling goes to the codecs). */
static int key(Scanner *s, const char *name) {
    size_t length = strlen(name);
    skip_space(s);
    if ((size_t)(s->end - s->p) < length + 2 || s->p[0] != '"' ||
        memcmp(s->p + 1, name, length) != 0 || s->p[length + 1] != '"')
        return 0;
    s->p += length + 2;
    return take(s, ':');
}

/* A JSON number (-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?) or null, as json.loads with
 * parse_int=float reads it: the float64 nearest it. 0 for anything else or beyond float32. */
static int value(Scanner *s, double *result) {
    skip_space(s);
    const char *p = s->p, *start = p;
    if (p[0] == 'n' && p[1] == 'u' && p[2] == 'l' && p[3] == 'l') {
        s->p = p + 4;
        *result = NAN;
        return 1;
    }
    int negative = *p == '-';
    p += negative;
    if (!is_digit(*p)) return 0;
    uint64_t mantissa = 0;
    int digits = 0, exponent = 0;
    if (*p == '0') {
        p++; /* a leading zero stands alone: json reads "01" as 0 and then fails */
    } else {
        for (; is_digit(*p); p++, digits++) mantissa = mantissa * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.') {
        const char *fraction = ++p;
        for (; is_digit(*p); p++, digits++) mantissa = mantissa * 10 + (uint64_t)(*p - '0');
        if (p == fraction) return 0;
        exponent = -(int)(p - fraction);
    }
    p = decimal_exponent(p, &exponent);
    if (p == NULL) return 0;
    double number;
    if (!decimal_value(start, p, mantissa, digits, exponent, negative, &number)) return 0;
    s->p = p;
    *result = number;
    return 1;
}

/* The values of a row after its ``[``, through its ``]``: 0 when empty, ragged or not read. */
static int row_values(Scanner *s) {
    Py_ssize_t count = 0;
    do {
        double number;
        if (!value(s, &number)) return 0;
        if (s->out != NULL) {
            if (s->written >= s->capacity) return 0;
            s->out[s->written] = (float)number;
        }
        s->written++;
        count++;
    } while (take(s, ','));
    if (!take(s, ']')) return 0;
    if (s->rows == 0) {
        s->width = count;
    } else if (count != s->width) {
        return 0;
    }
    s->rows++;
    return 1;
}

/* ``{"features": [...]}`` after its ``{``, through its ``}``. */
static int features_object(Scanner *s) {
    return key(s, "features") && take(s, '[') && row_values(s) && take(s, '}');
}

/* Rows (each ``[...]`` or ``{"features": [...]}``) after the list's ``[``, through its ``]``. */
static int rows(Scanner *s) {
    do {
        if (take(s, '[')) {
            if (!row_values(s)) return 0;
        } else if (!(take(s, '{') && features_object(s))) {
            return 0;
        }
    } while (take(s, ','));
    return take(s, ']');
}

static int document(Scanner *s) {
    if (s->end - s->p >= 3 && memcmp(s->p, "\xef\xbb\xbf", 3) == 0) s->p += 3; /* RFC 8259 8.1 */
    int read;
    if (take(s, '{')) {
        const char *after = s->p;
        if (key(s, "instances")) {
            read = take(s, '[') && rows(s) && take(s, '}');
        } else {
            s->p = after;
            read = features_object(s);
        }
    } else if (take(s, '[')) {
        skip_space(s);
        read = (*s->p == '[' || *s->p == '{') ? rows(s) : row_values(s); /* one row */
    } else {
        return 0;
    }
    skip_space(s);
    return read && s->p == s->end && s->width > 0;
}

static PyObject *fastjson_scan(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *data, *target;
    if (!PyArg_ParseTuple(args, "SO:scan", &data, &target)) return NULL;
    Py_buffer out = {0};
    const char *start = PyBytes_AS_STRING(data);
    Scanner s = {.p = start, .end = start + PyBytes_GET_SIZE(data)};
    if (target != Py_None) {
        if (PyObject_GetBuffer(target, &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT))
            return NULL;
        if (out.itemsize != 4 || out.format == NULL || strcmp(out.format, "f") != 0) {
            PyBuffer_Release(&out);
            PyErr_SetString(PyExc_TypeError, "out must be a C-contiguous float32 array");
            return NULL;
        }
        s.out = out.buf;
        s.capacity = out.len / 4;
    }
    int read;
    Py_BEGIN_ALLOW_THREADS
    read = document(&s);
    Py_END_ALLOW_THREADS
    if (target != Py_None) {
        read = read && s.written == s.capacity;
        PyBuffer_Release(&out);
    }
    if (!read) Py_RETURN_NONE;
    return Py_BuildValue("(nn)", s.rows, s.width);
}

static PyMethodDef methods[] = {
    {"scan", fastjson_scan, METH_VARARGS, "Numeric JSON rows: (rows, width), or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastjson", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastjson(void) {
    if (decimal_init() < 0) return NULL;
    return PyModule_Create(&module);
}
