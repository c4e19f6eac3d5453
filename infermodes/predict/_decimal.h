/* A decimal number's parts to the float64 nearest it, shared by the native CSV and JSON readers
 * (_fastcsv.c, _fastjson.c): each reads its own grammar's sign, digits and point, then hands the
 * exponent's text and the parts here. Both answer as Python's float() would, and refuse (0) a
 * value float32 cannot hold, so that the codecs name it. The slow path reads with strtod_l in
 * the "C" locale: plain strtod reads the process's LC_NUMERIC, and under a comma-decimal locale
 * (de_DE, set by anything in the process that calls setlocale) it would read "1.5e30" as 1.
 * Each module calls decimal_init() once, when it is imported.
 */
#ifndef INFERMODES_DECIMAL_H
#define INFERMODES_DECIMAL_H

#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* 2**128 - 2**103: the smallest magnitude float32 rounds to infinity (codecs.F32_OVERFLOW). */
static const double F32_OVERFLOW = 340282356779733661637539395458142568448.0;

static const double EXACT_POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                       1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                       1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The "C" locale the slow path reads numbers in, whatever the process's locale. */
static locale_t decimal_locale = (locale_t)0;

/* 0, or -1 with a Python error set when the locale cannot be made (out of memory). */
static int decimal_init(void) {
    if (decimal_locale == (locale_t)0)
        decimal_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (decimal_locale != (locale_t)0) return 0;
    PyErr_SetString(PyExc_MemoryError, "cannot make the C locale to read numbers in");
    return -1;
}

static inline int is_digit(char c) { return c >= '0' && c <= '9'; }

/* An exponent part (``e``/``E``, an optional sign, digits) at ``p``, if any, added to
 * ``*exponent`` (its magnitude held at 100000: far past any double). Returns the end of the
 * number; NULL for an ``e`` without digits. */
static inline const char *decimal_exponent(const char *p, int *exponent) {
    if (*p != 'e' && *p != 'E') return p;
    p++;
    int negative = 0;
    long value = 0;
    if (*p == '+' || *p == '-') negative = *p++ == '-';
    const char *start = p;
    for (; is_digit(*p); p++) {
        if (value < 100000) value = value * 10 + (*p - '0');
    }
    if (p == start) return NULL;
    *exponent += (int)(negative ? -value : value);
    return p;
}

/* The float64 nearest the number spelled by [start, end) (``mantissa`` x 10**``exponent``, of
 * ``digits`` significant digits, negated when ``negative``), into ``*value``: 0 when float32
 * cannot hold it or the spelling is too long for the slow path (the codecs then decide). */
static inline int decimal_value(const char *start, const char *end, uint64_t mantissa,
                                int digits, int exponent, int negative, double *value) {
    double result;
    if (digits <= 19 && mantissa <= (UINT64_C(1) << 53) && exponent >= -22 && exponent <= 22) {
        /* exact operands, one correctly rounded operation (Clinger's fast path) */
        result = exponent >= 0 ? (double)mantissa * EXACT_POW10[exponent]
                               : (double)mantissa / EXACT_POW10[-exponent];
        if (negative) result = -result;
    } else {
        char buffer[128];
        size_t length = (size_t)(end - start);
        if (length >= sizeof buffer) return 0;
        memcpy(buffer, start, length);
        buffer[length] = '\0';
        /* glibc's strtod rounds correctly, as Python's does; "C": its point is '.' */
        result = strtod_l(buffer, NULL, decimal_locale);
    }
    if (!(fabs(result) < F32_OVERFLOW)) return 0;
    *value = result;
    return 1;
}

#endif
