/* Fast CSV parse and format for batch transform (infermodes/predict/fastcsv.py wraps this).
 *
 * parse(data, width, out): clean numeric CSV -> float32 rows, exactly as the codecs read it
 *   (each field correctly rounded to float64, then to float32), the GIL released. Anything the
 *   fast path does not handle (letters, a wrong field count, a lone CR, a value beyond float32)
 *   returns -1, and the caller decodes that chunk with the codecs, which name the error.
 * format(values, columns): float32/float64 values -> one CSV line per row, each value written as
 *   Python's repr(float(value)) writes it: the shortest decimal that reads back to the same
 *   float64 (the nearest of those, ties to even), in Python's fixed or exponent notation. Values
 *   outside [1e-10, 1e16) in magnitude, NaN and infinities go through CPython's own
 *   PyOS_double_to_string, so every value is written as repr writes it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_decimal.h"

typedef unsigned __int128 u128;

static inline int is_blank(char c) { return c == ' ' || c == '\t'; }

/* One field at *pp (spaces, a decimal, spaces): 1 and the value, 0 for something else. The
 * data ends with a NUL (a bytes object's), which no loop here reads past: it is neither a
 * blank nor a digit, and the caller tells a NUL at the end from one inside. */
static const uint64_t POW10[18];

/* The digits at p (at least eight readable bytes) appended to *mantissa, eight at a time
 * (SWAR, as in simdjson and fast_float): the run's length from a mask of the non-digit bytes,
 * so no branch depends on it, its value in three multiplications. Wraps past 19 digits (the
 * caller then uses strtod_l in the C locale). Returns the end of the run. */
static inline const char *swar_digits(const char *p, const char *end, uint64_t *mantissa) {
    uint64_t m = *mantissa;
    for (;;) {
        if (end - p < 8) {
            while (is_digit(*p)) m = m * 10 + (uint64_t)(*p++ - '0');
            break;
        }
        uint64_t v, high = 0xF0F0F0F0F0F0F0F0ULL, threes = 0x3030303030303030ULL;
        memcpy(&v, p, 8);
        /* a byte is a digit iff its high nibble is 3 before and after adding 6 (a carry out of
         * a byte above 0xF9 only disturbs the bytes after that non-digit) */
        uint64_t other = ((v & high) ^ threes) | (((v + 0x0606060606060606ULL) & high) ^ threes);
        int n = other ? __builtin_ctzll(other) / 8 : 8;
        if (n == 0) break;
        uint64_t d = (v << (64 - 8 * n)) - (threes << (64 - 8 * n)); /* zeros before */
        d = d * 10 + (d >> 8);
        d = (((d & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32))) +
             (((d >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >>
            32;
        m = m * POW10[n] + (uint32_t)d;
        p += n;
        if (n < 8) break;
    }
    *mantissa = m;
    return p;
}

static int parse_field(const char **pp, const char *end, double *value) {
    const char *p = *pp;
    while (is_blank(*p)) p++;
    const char *start = p;
    int negative = 0;
    if (*p == '+' || *p == '-') negative = *p++ == '-';
    const char *digits_start = p;
    uint64_t mantissa = 0;
    while (is_digit(*p)) mantissa = mantissa * 10 + (uint64_t)(*p++ - '0');
    int digits = (int)(p - digits_start), exponent = 0;
    if (*p == '.') {
        const char *fraction = ++p;
        p = swar_digits(p, end, &mantissa);
        exponent = -(int)(p - fraction);
        digits -= exponent;
    }
    if (digits == 0) {
        if (p != digits_start) return 0; /* a point alone */
        if ((p[0] | 0x20) == 'n' && (p[1] | 0x20) == 'a' && (p[2] | 0x20) == 'n') {
            p += 3; /* nan, any case, signed or not: a missing value */
        } else if (p != start) {
            return 0; /* a sign alone */
        }
        while (is_blank(*p)) p++;
        *value = NAN; /* an empty field is a missing value too */
        *pp = p;
        return 1;
    }
    p = decimal_exponent(p, &exponent);
    if (p == NULL) return 0;
    const char *token_end = p;
    while (is_blank(*p)) p++;
    if (!decimal_value(start, token_end, mantissa, digits, exponent, negative, value)) return 0;
    *pp = p;
    return 1;
}

/* Rows of ``width`` fields into out (room for ``capacity`` rows); -1 for the codecs' path. */
static Py_ssize_t parse_rows(const char *p, const char *end, Py_ssize_t width, float *out,
                             Py_ssize_t capacity) {
    Py_ssize_t rows = 0;
    while (p < end) {
        const char *q = p;
        while (is_blank(*q)) q++;
        if (q == end) break;
        if (*q == '\n' || (*q == '\r' && q[1] == '\n')) { /* a blank line */
            p = q + (*q == '\r' ? 2 : 1);
            continue;
        }
        if (rows == capacity) return -1;
        float *row = out + rows * width;
        for (Py_ssize_t column = 0; column < width; column++) {
            double value;
            if (!parse_field(&p, end, &value)) return -1;
            row[column] = (float)value;
            if (column + 1 < width) {
                if (*p != ',') return -1;
                p++;
            }
        }
        if (*p == '\r' && p[1] == '\n') p++;
        if (*p == '\n') {
            p++;
        } else if (p != end) {
            return -1; /* more fields, other bytes, a lone CR, a NUL */
        }
        rows++;
    }
    return rows;
}

static PyObject *fastcsv_parse(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *data;
    Py_buffer out;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "Snw*", &data, &width, &out)) return NULL;
    Py_ssize_t rows = -1;
    if (width > 0 && out.len % ((Py_ssize_t)sizeof(float) * width) == 0) {
        Py_ssize_t capacity = out.len / ((Py_ssize_t)sizeof(float) * width);
        const char *start = PyBytes_AS_STRING(data); /* NUL-terminated, immutable */
        const char *end = start + PyBytes_GET_SIZE(data);
        Py_BEGIN_ALLOW_THREADS rows = parse_rows(start, end, width, (float *)out.buf, capacity);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&out);
    return PyLong_FromSsize_t(rows);
}

static const uint64_t POW5[28] = {1ULL,
                                  5ULL,
                                  25ULL,
                                  125ULL,
                                  625ULL,
                                  3125ULL,
                                  15625ULL,
                                  78125ULL,
                                  390625ULL,
                                  1953125ULL,
                                  9765625ULL,
                                  48828125ULL,
                                  244140625ULL,
                                  1220703125ULL,
                                  6103515625ULL,
                                  30517578125ULL,
                                  152587890625ULL,
                                  762939453125ULL,
                                  3814697265625ULL,
                                  19073486328125ULL,
                                  95367431640625ULL,
                                  476837158203125ULL,
                                  2384185791015625ULL,
                                  11920928955078125ULL,
                                  59604644775390625ULL,
                                  298023223876953125ULL,
                                  1490116119384765625ULL,
                                  7450580596923828125ULL};

static const uint64_t POW10[18] = {1ULL,
                                   10ULL,
                                   100ULL,
                                   1000ULL,
                                   10000ULL,
                                   100000ULL,
                                   1000000ULL,
                                   10000000ULL,
                                   100000000ULL,
                                   1000000000ULL,
                                   10000000000ULL,
                                   100000000000ULL,
                                   1000000000000ULL,
                                   10000000000000ULL,
                                   100000000000000ULL,
                                   1000000000000000ULL,
                                   10000000000000000ULL,
                                   100000000000000000ULL};

/* x * 2**t for t >= 0, x / 2**-t otherwise: the quotient, and whether a remainder exists. */
static inline uint64_t scaled(u128 x, int t, u128 *remainder) {
    if (t >= 0) {
        *remainder = 0;
        return (uint64_t)(x << t);
    }
    *remainder = x & ((((u128)1) << -t) - 1);
    return (uint64_t)(x >> -t);
}

static const char DIGIT_PAIRS[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* 10**n for n in -11..17, as doubles (the nearest for negative n): a first guess of the
 * decimal exponent, which shortest() then checks exactly. */
static const double GUESS_POW10[29] = {1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4,
                                       1e-3,  1e-2,  1e-1, 1e0,  1e1,  1e2,  1e3,  1e4,
                                       1e5,   1e6,   1e7,  1e8,  1e9,  1e10, 1e11, 1e12,
                                       1e13,  1e14,  1e15, 1e16, 1e17};

/* The shortest digits of a positive finite double in [1e-10, 1e16) that read back to it, the
 * nearest of those (ties to an even last digit): writes the digits, returns their count and
 * sets *decpt (the value is 0.DIGITS x 10**decpt); 0 when the caller must fall back.
 *
 * With value = m * 2**e, the doubles nearest to it read back to it from the interval
 * [value - gap_below/2, value + gap_above/2] (ends included when m is even, as strtod rounds
 * ties to even). Scaled by 10**k so that value * 10**k lies in [1e16, 1e17), the interval's
 * ends and the value are (2m-1, 2m+1, 2m) * 2**(e-1) * 5**k * 2**k: integers times a power of
 * two, exact in 128 bits for this range. The answer is the multiple of the largest power of
 * ten inside the interval (the interval is wider than 1 at this scale, so one exists), the
 * nearer of the two around the value. */
static int shortest(double value, char *digits, int *decpt) {
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    int biased = (int)(bits >> 52);
    uint64_t fraction = bits & ((UINT64_C(1) << 52) - 1);
    uint64_t m = fraction | (UINT64_C(1) << 52);
    int e = biased - 1075; /* value = m * 2**e */
    int closed = (m & 1) == 0; /* an even mantissa owns the halfway points (round half even) */
    /* the interval that reads back to value, in units of 2**(e-2) */
    uint64_t low4 = 4 * m - (fraction == 0 && biased > 1 ? 1 : 2), high4 = 4 * m + 2, mid4 = 4 * m;
    int exponent10 = ((biased - 1023) * 78913) >> 18; /* floor(log10(2**(biased-1023))) */
    if (exponent10 + 1 >= -11 && exponent10 + 1 <= 17 && value >= GUESS_POW10[exponent10 + 12])
        exponent10++;
    int k = 16 - exponent10;
    uint64_t lo = 0, hi = 0, mid = 0;
    u128 mid_rest = 0;
    int t = 0;
    for (int attempt = 0;; attempt++) {
        if (attempt == 3 || k < 0 || k > 27) return 0;
        t = k + e - 2;
        if (t > 10 || t < -120) return 0;
        u128 rest_lo, rest_hi;
        lo = scaled((u128)low4 * POW5[k], t, &rest_lo);
        hi = scaled((u128)high4 * POW5[k], t, &rest_hi);
        mid = scaled((u128)mid4 * POW5[k], t, &mid_rest);
        if (mid < POW10[16]) {
            k++;
        } else if (mid >= POW10[17]) {
            k--;
        } else {
            if (rest_lo != 0 || !closed) lo++; /* ceiling, or past an excluded end */
            if (rest_hi == 0 && !closed) hi--;
            break;
        }
    }
    if (lo > hi) return 0;
    /* the multiples of 10**j inside are low..high times 10**j: find the largest such j */
    uint64_t low = lo, high = hi, near = mid;
    int j = 0;
    while ((low + 9) / 10 <= high / 10) {
        low = (low + 9) / 10;
        high /= 10;
        near /= 10;
        j++;
    }
    /* below = near * 10**j <= mid < above = (near + 1) * 10**j; mid = MID + f, f in [0, 1) */
    uint64_t unit = POW10[j], r = mid - near * unit;
    int below_ok = near >= low, above_ok = near + 1 <= high;
    uint64_t q;
    if (below_ok && above_ok) {
        int64_t gap = (int64_t)(unit - 2 * r); /* below is nearer iff 2f < gap */
        int order; /* <0: below nearer, >0: above nearer, 0: a tie */
        if (gap >= 2)
            order = -1;
        else if (gap <= -1)
            order = 1;
        else if (gap == 0)
            order = mid_rest == 0 ? 0 : 1;
        else { /* gap 1: compare f with 1/2 */
            u128 half = t < 0 ? ((u128)1) << (-t - 1) : 0;
            order = t >= 0 ? -1 : (mid_rest < half ? -1 : mid_rest > half ? 1 : 0);
        }
        if (order == 0) order = near % 2 == 0 ? -1 : 1;
        q = order < 0 ? near : near + 1;
    } else if (below_ok) {
        q = near;
    } else if (above_ok) {
        q = near + 1;
    } else {
        return 0;
    }
    while (q % 10 == 0) {
        q /= 10;
        j++;
    }
    /* q < 10**18: two halves of up to nine digits, each two digits at a time (independent
     * chains of 32-bit arithmetic instead of one chain of 64-bit divisions) */
    char text[18];
    uint32_t halves[2] = {(uint32_t)(q / 1000000000), (uint32_t)(q % 1000000000)};
    for (int h = 0; h < 2; h++) {
        char *out = text + 9 * h + 9;
        uint32_t n = halves[h];
        for (int pair = 0; pair < 4; pair++) {
            out -= 2;
            memcpy(out, DIGIT_PAIRS + 2 * (n % 100), 2);
            n /= 100;
        }
        out[-1] = (char)('0' + n);
    }
    int skip = 0;
    while (text[skip] == '0') skip++;
    int count = 18 - skip;
    memcpy(digits, text + skip, (size_t)count);
    *decpt = count + j - k;
    return count;
}

/* repr(float(value)) at p; returns the end. */
static char *write_repr(char *p, double value) {
    if (value == 0.0) {
        if (signbit(value)) *p++ = '-';
        memcpy(p, "0.0", 3);
        return p + 3;
    }
    char digits[20];
    int decpt = 0, count = 0;
    double magnitude = fabs(value);
    if (magnitude >= 1e-10 && magnitude < 1e16) count = shortest(magnitude, digits, &decpt);
    if (count == 0) {
        char *text = PyOS_double_to_string(value, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (text == NULL) return NULL;
        size_t length = strlen(text);
        memcpy(p, text, length);
        PyMem_Free(text);
        return p + length;
    }
    if (value < 0) *p++ = '-';
    if (decpt > -4 && decpt <= 16) { /* Python's fixed notation, a ".0" for integers */
        if (decpt <= 0) {
            *p++ = '0';
            *p++ = '.';
            for (int i = 0; i < -decpt; i++) *p++ = '0';
            memcpy(p, digits, (size_t)count);
            p += count;
        } else if (decpt >= count) {
            memcpy(p, digits, (size_t)count);
            p += count;
            for (int i = count; i < decpt; i++) *p++ = '0';
            memcpy(p, ".0", 2);
            p += 2;
        } else {
            memcpy(p, digits, (size_t)decpt);
            p += decpt;
            *p++ = '.';
            memcpy(p, digits + decpt, (size_t)(count - decpt));
            p += count - decpt;
        }
        return p;
    }
    *p++ = digits[0]; /* exponent notation: d[.ddd]e-XX */
    if (count > 1) {
        *p++ = '.';
        memcpy(p, digits + 1, (size_t)(count - 1));
        p += count - 1;
    }
    int exponent = decpt - 1;
    *p++ = 'e';
    *p++ = exponent < 0 ? '-' : '+';
    if (exponent < 0) exponent = -exponent;
    if (exponent >= 100) *p++ = (char)('0' + exponent / 100);
    *p++ = (char)('0' + exponent / 10 % 10);
    *p++ = (char)('0' + exponent % 10);
    return p;
}

#define MAX_REPR 32 /* "-1.2345678901234567e-308" and a separator fit */

static PyObject *fastcsv_format(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *source;
    Py_ssize_t columns;
    if (!PyArg_ParseTuple(args, "On", &source, &columns)) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(source, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    PyObject *result = NULL;
    int is_float = strcmp(view.format, "f") == 0, is_double = strcmp(view.format, "d") == 0;
    Py_ssize_t count = view.itemsize ? view.len / view.itemsize : 0;
    if (!(is_float || is_double) || columns <= 0 || count % columns != 0) {
        PyErr_SetString(PyExc_ValueError, "format takes float32 or float64 values, whole rows");
        goto done;
    }
    if (count > PY_SSIZE_T_MAX / MAX_REPR) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, count * MAX_REPR);
    if (result == NULL) goto done;
    char *start = PyBytes_AS_STRING(result), *p = start;
    for (Py_ssize_t i = 0; i < count; i++) {
        double value = is_float ? (double)((const float *)view.buf)[i] : ((const double *)view.buf)[i];
        p = write_repr(p, value);
        if (p == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        *p++ = (i + 1) % columns == 0 ? '\n' : ',';
    }
    _PyBytes_Resize(&result, p - start);
done:
    PyBuffer_Release(&view);
    return result;
}

static PyObject *fastcsv_count_lines(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    const char *p = data.buf, *end = p + data.len;
    Py_ssize_t count = 0;
    Py_BEGIN_ALLOW_THREADS
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) { /* glibc's is SIMD */
        count++;
        p++;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    return PyLong_FromSsize_t(count);
}

static PyMethodDef methods[] = {
    {"count_lines", fastcsv_count_lines, METH_VARARGS,
     "count_lines(data) -> the number of LF bytes: bytes.count(b'\\n'), faster."},
    {"parse", fastcsv_parse, METH_VARARGS,
     "parse(data, width, out) -> rows written into out (float32), or -1: use the codecs."},
    {"format", fastcsv_format, METH_VARARGS,
     "format(values, columns) -> CSV lines, each value as repr(float(value))."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastcsv", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fastcsv(void) {
    if (decimal_init() < 0) return NULL;
    return PyModule_Create(&module);
}
