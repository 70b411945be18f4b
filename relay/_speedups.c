/*
 * relay._speedups: an optional accelerator for relay.wire and relay.presence.
 *
 * relay works without it: those modules have a pure-Python version of every
 * function here and use it when this module is missing or when the
 * environment variable RELAY_PURE_PYTHON is set. Where a function here
 * returns None, the caller takes its pure-Python path for that input. Both
 * give the same result for every input; tests/test_speedups.py checks that.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

#define ID_SIZE 16
#define FIELDS 6
#define MESSAGE_FIELDS 8

static const char HEX_DIGITS[] = "0123456789abcdef";

/* 0 if a function got `expected` arguments; else -1 with a TypeError set. */
static int
check_count(const char *name, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs == expected) {
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, expected, nargs);
    return -1;
}

/* True for the types msgpack decodes natively and relay passes through. */
static inline int
is_plain(PyObject *value)
{
    return value == Py_None || PyBool_Check(value) || PyLong_CheckExact(value)
        || PyFloat_CheckExact(value) || PyUnicode_CheckExact(value)
        || PyBytes_CheckExact(value);
}

/* 32 lowercase hex digits of a 16-byte id, as bytes.hex() gives them. */
static PyObject *
hex_id(PyObject *id)
{
    PyObject *text = PyUnicode_New(2 * ID_SIZE, 127);
    if (text == NULL) {
        return NULL;
    }
    const unsigned char *raw = (const unsigned char *)PyBytes_AS_STRING(id);
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(text);
    for (Py_ssize_t i = 0; i < ID_SIZE; i++) {
        out[2 * i] = HEX_DIGITS[raw[i] >> 4];
        out[2 * i + 1] = HEX_DIGITS[raw[i] & 0x0F];
    }
    return text;
}

/*
 * Check one message's fields, the way relay.wire._plain_messages does:
 * 1 if they are those of a plain message, 0 if not, -1 with an exception set.
 * Adds the number of its keyword arguments to *items.
 */
static int
check_message(PyObject *fields, Py_ssize_t *items)
{
    if (!PyList_CheckExact(fields) || PyList_GET_SIZE(fields) != FIELDS) {
        return 0;
    }
    PyObject *id = PyList_GET_ITEM(fields, 0);
    PyObject *seq = PyList_GET_ITEM(fields, 1);
    PyObject *signal = PyList_GET_ITEM(fields, 2);
    PyObject *sender = PyList_GET_ITEM(fields, 3);
    PyObject *sent_at = PyList_GET_ITEM(fields, 4);
    PyObject *kwargs = PyList_GET_ITEM(fields, 5);
    if (!PyBytes_CheckExact(id) || PyBytes_GET_SIZE(id) != ID_SIZE) {
        return 0;
    }
    if (!PyLong_CheckExact(seq)) {
        return 0;
    }
    int overflow = 0;
    long long number = PyLong_AsLongLongAndOverflow(seq, &overflow);
    if (number == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow < 0 || (overflow == 0 && number < 0)) {
        return 0;
    }
    if (!PyUnicode_CheckExact(signal) || PyUnicode_GET_LENGTH(signal) == 0) {
        return 0;
    }
    if (sender != Py_None && !PyUnicode_CheckExact(sender)) {
        return 0;
    }
    if (!PyFloat_CheckExact(sent_at) || !isfinite(PyFloat_AS_DOUBLE(sent_at))) {
        return 0;
    }
    if (!PyDict_CheckExact(kwargs)) {
        return 0;
    }
    Py_ssize_t position = 0;
    PyObject *key, *value;
    while (PyDict_Next(kwargs, &position, &key, &value)) {
        if (!PyUnicode_CheckExact(key) || !is_plain(value)) {
            return 0;
        }
    }
    *items += PyDict_GET_SIZE(kwargs);
    return 1;
}

/* A Message (a tuple subclass) of a checked message's fields. */
static PyObject *
make_message(PyTypeObject *type, PyObject *fields, PyObject *origin)
{
    PyObject *id = hex_id(PyList_GET_ITEM(fields, 0));
    if (id == NULL) {
        return NULL;
    }
    PyObject *message = type->tp_alloc(type, MESSAGE_FIELDS);
    if (message == NULL) {
        Py_DECREF(id);
        return NULL;
    }
    if (PyList_GET_SIZE(fields) != FIELDS) {
        /* Only a finalizer run by the allocation above could have done this. */
        Py_DECREF(id);
        Py_DECREF(message);
        PyErr_SetString(PyExc_RuntimeError, "a message changed while it was decoded");
        return NULL;
    }
    PyTuple_SET_ITEM(message, 0, id);
    PyTuple_SET_ITEM(message, 1, Py_NewRef(origin));
    for (Py_ssize_t i = 1; i < FIELDS; i++) {
        PyTuple_SET_ITEM(message, i + 1, Py_NewRef(PyList_GET_ITEM(fields, i)));
    }
    PyTuple_SET_ITEM(message, 7, Py_NewRef(Py_None));
    return message;
}

PyDoc_STRVAR(plain_messages_doc,
"plain_messages(messages, origin, max_items, message_type, /)\n"
"--\n\n"
"The decoded messages of a frame whose messages are all plain, as\n"
"relay.wire._plain_messages computes them: (messages, one_signal, seqs),\n"
"or None for any other frame.");

static PyObject *
plain_messages(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (check_count("plain_messages", nargs, 4) < 0) {
        return NULL;
    }
    PyObject *messages = args[0];
    PyObject *origin = args[1];
    Py_ssize_t max_items = PyLong_AsSsize_t(args[2]);
    if (max_items == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyType_Check(args[3]) || !PyType_IsSubtype((PyTypeObject *)args[3], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "message_type must be a subclass of tuple");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)args[3];
    if (!PyList_CheckExact(messages) || PyList_GET_SIZE(messages) == 0) {
        Py_RETURN_NONE;
    }
    Py_ssize_t count = PyList_GET_SIZE(messages);
    Py_ssize_t items = count;
    PyObject *one_signal = NULL;  /* borrowed; NULL once two signals differ */
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *fields = PyList_GET_ITEM(messages, i);
        int plain = check_message(fields, &items);
        if (plain <= 0) {
            if (plain < 0) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
        if (items > max_items) {
            Py_RETURN_NONE;
        }
        PyObject *signal = PyList_GET_ITEM(fields, 2);
        if (i == 0) {
            one_signal = signal;
        }
        else if (one_signal != NULL && one_signal != signal) {
            int same = PyUnicode_Compare(one_signal, signal);
            if (same == -1 && PyErr_Occurred()) {
                return NULL;
            }
            if (same != 0) {
                one_signal = NULL;
            }
        }
    }
    /* Every field is checked. Allocating below may run a collection: hold
       what is kept of the frame, so that nothing borrowed can go away. */
    Py_XINCREF(one_signal);
    PyObject *decoded = PyList_New(count);
    PyObject *seqs = PyList_New(count);
    if (decoded == NULL || seqs == NULL) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (PyList_GET_SIZE(messages) != count) {
            PyErr_SetString(PyExc_RuntimeError, "a frame changed while it was decoded");
            goto fail;
        }
        PyObject *fields = Py_NewRef(PyList_GET_ITEM(messages, i));
        PyObject *message = make_message(type, fields, origin);
        if (message == NULL) {
            Py_DECREF(fields);
            goto fail;
        }
        PyList_SET_ITEM(decoded, i, message);
        PyList_SET_ITEM(seqs, i, Py_NewRef(PyList_GET_ITEM(fields, 1)));
        Py_DECREF(fields);
    }
    PyObject *signal = one_signal == NULL ? Py_None : one_signal;
    PyObject *result = PyTuple_Pack(3, decoded, signal, seqs);
    Py_XDECREF(one_signal);
    Py_DECREF(decoded);
    Py_DECREF(seqs);
    return result;
fail:
    Py_XDECREF(one_signal);
    Py_XDECREF(decoded);
    Py_XDECREF(seqs);
    return NULL;
}


/* -- encoding ------------------------------------------------------------- */

/* How deep encode_body follows lists and dicts before leaving a value to msgpack. */
#define MAX_DEPTH 32

typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
    char inline_space[512];
} Buffer;

static int
reserve(Buffer *buffer, Py_ssize_t more)
{
    if (buffer->size + more <= buffer->capacity) {
        return 0;
    }
    Py_ssize_t capacity = buffer->capacity;
    while (capacity < buffer->size + more) {
        if (capacity > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        capacity *= 2;
    }
    char *data;
    if (buffer->data == buffer->inline_space) {
        data = PyMem_Malloc(capacity);
        if (data != NULL) {
            memcpy(data, buffer->data, buffer->size);
        }
    }
    else {
        data = PyMem_Realloc(buffer->data, capacity);
    }
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->data = data;
    buffer->capacity = capacity;
    return 0;
}

static int
put(Buffer *buffer, const void *bytes, Py_ssize_t size)
{
    if (reserve(buffer, size) < 0) {
        return -1;
    }
    memcpy(buffer->data + buffer->size, bytes, size);
    buffer->size += size;
    return 0;
}

/* A type byte, then the low `width` bytes of `value`, big-endian. */
static int
write_typed(Buffer *buffer, unsigned char type, unsigned long long value, int width)
{
    unsigned char out[9];
    out[0] = type;
    for (int i = 0; i < width; i++) {
        out[width - i] = (unsigned char)(value >> (8 * i));
    }
    return put(buffer, out, 1 + width);
}

/* A header of a str, bin, array or map: the smallest msgpack has for `length`. */
static int
write_header(Buffer *buffer, Py_ssize_t length, unsigned char fix, Py_ssize_t fix_limit,
             unsigned char one, unsigned char two, unsigned char four)
{
    if (length < fix_limit) {
        unsigned char head = (unsigned char)(fix | length);
        return put(buffer, &head, 1);
    }
    if (one != 0 && length < 256) {
        return write_typed(buffer, one, (unsigned long long)length, 1);
    }
    if (length < 65536) {
        return write_typed(buffer, two, (unsigned long long)length, 2);
    }
    return write_typed(buffer, four, (unsigned long long)length, 4);
}

/* The integer forms msgpack's Packer picks: the shortest that holds it. */
static int
write_int(Buffer *buffer, PyObject *value)
{
    int overflow = 0;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (number == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow == 0 && number < 0) {
        if (number >= -32) {
            unsigned char head = (unsigned char)(number & 0xFF);
            return put(buffer, &head, 1);
        }
        if (number >= -128) {
            return write_typed(buffer, 0xD0, (unsigned long long)number, 1);
        }
        if (number >= -32768) {
            return write_typed(buffer, 0xD1, (unsigned long long)number, 2);
        }
        if (number >= -2147483648LL) {
            return write_typed(buffer, 0xD2, (unsigned long long)number, 4);
        }
        return write_typed(buffer, 0xD3, (unsigned long long)number, 8);
    }
    unsigned long long positive;
    if (overflow == 0) {
        positive = (unsigned long long)number;
    }
    else if (overflow > 0) {
        positive = PyLong_AsUnsignedLongLong(value);
        if (positive == (unsigned long long)-1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
                return -1;
            }
            PyErr_Clear();
            return 0;  /* beyond 64 bits: relay's big-integer extension type */
        }
    }
    else {
        return 0;
    }
    if (positive < 128) {
        unsigned char head = (unsigned char)positive;
        return put(buffer, &head, 1);
    }
    if (positive < 256) {
        return write_typed(buffer, 0xCC, positive, 1);
    }
    if (positive < 65536) {
        return write_typed(buffer, 0xCD, positive, 2);
    }
    if (positive < 4294967296ULL) {
        return write_typed(buffer, 0xCE, positive, 4);
    }
    return write_typed(buffer, 0xCF, positive, 8);
}

static int
write_double(Buffer *buffer, double value)
{
    unsigned long long bits;
    memcpy(&bits, &value, sizeof bits);
    return write_typed(buffer, 0xCB, bits, 8);
}

static int write_map(Buffer *buffer, PyObject *map, int depth);

/*
 * Pack `value` as msgpack.Packer(strict_types=True, use_bin_type=True) does:
 * 1 if packed, 0 if it is a value this encoder leaves to msgpack (an
 * extension type, a subclass, a string with lone surrogates, ...: the caller
 * then encodes the whole send in Python), -1 with an exception set.
 */
static int
write_value(Buffer *buffer, PyObject *value, int depth)
{
    if (value == Py_None) {
        unsigned char head = 0xC0;
        return put(buffer, &head, 1) < 0 ? -1 : 1;
    }
    if (value == Py_True || value == Py_False) {
        unsigned char head = value == Py_True ? 0xC3 : 0xC2;
        return put(buffer, &head, 1) < 0 ? -1 : 1;
    }
    if (PyLong_CheckExact(value)) {
        Py_ssize_t before = buffer->size;
        int done = write_int(buffer, value);
        if (done < 0) {
            return -1;
        }
        return buffer->size > before ? 1 : 0;
    }
    if (PyFloat_CheckExact(value)) {
        return write_double(buffer, PyFloat_AS_DOUBLE(value)) < 0 ? -1 : 1;
    }
    if (PyUnicode_CheckExact(value)) {
        Py_ssize_t size;
        const char *text = PyUnicode_AsUTF8AndSize(value, &size);
        if (text == NULL) {
            PyErr_Clear();
            return 0;
        }
        if (size > 0xFFFFFFFFLL) {
            return 0;
        }
        if (write_header(buffer, size, 0xA0, 32, 0xD9, 0xDA, 0xDB) < 0
            || put(buffer, text, size) < 0) {
            return -1;
        }
        return 1;
    }
    if (PyBytes_CheckExact(value)) {
        Py_ssize_t size = PyBytes_GET_SIZE(value);
        if (size > 0xFFFFFFFFLL) {
            return 0;
        }
        if (write_header(buffer, size, 0, 0, 0xC4, 0xC5, 0xC6) < 0
            || put(buffer, PyBytes_AS_STRING(value), size) < 0) {
            return -1;
        }
        return 1;
    }
    if (depth >= MAX_DEPTH) {
        return 0;
    }
    if (PyList_CheckExact(value)) {
        Py_ssize_t length = PyList_GET_SIZE(value);
        if (length > 0xFFFFFFFFLL
            || write_header(buffer, length, 0x90, 16, 0, 0xDC, 0xDD) < 0) {
            return length > 0xFFFFFFFFLL ? 0 : -1;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(value); i++) {
            PyObject *item = Py_NewRef(PyList_GET_ITEM(value, i));
            int done = write_value(buffer, item, depth + 1);
            Py_DECREF(item);
            if (done <= 0) {
                return done;
            }
        }
        /* A list that changed length while packed would not match its header. */
        return PyList_GET_SIZE(value) == length ? 1 : 0;
    }
    if (PyDict_CheckExact(value)) {
        return write_map(buffer, value, depth);
    }
    return 0;
}

static int
write_map(Buffer *buffer, PyObject *map, int depth)
{
    Py_ssize_t length = PyDict_GET_SIZE(map);
    if (length > 0xFFFFFFFFLL) {
        return 0;
    }
    if (write_header(buffer, length, 0x80, 16, 0, 0xDE, 0xDF) < 0) {
        return -1;
    }
    Py_ssize_t position = 0, written = 0;
    PyObject *key, *item;
    while (PyDict_Next(map, &position, &key, &item)) {
        Py_INCREF(key);
        Py_INCREF(item);
        int done = write_value(buffer, key, depth + 1);
        if (done > 0) {
            done = write_value(buffer, item, depth + 1);
        }
        Py_DECREF(key);
        Py_DECREF(item);
        if (done <= 0) {
            return done;
        }
        written++;
    }
    return written == length && PyDict_GET_SIZE(map) == length ? 1 : 0;
}

PyDoc_STRVAR(encode_body_doc,
"encode_body(head, sender, sent_at, named, /)\n"
"--\n\n"
"head + sender + sent_at as a msgpack float 64 + named packed as\n"
"relay.wire packs keyword arguments, as bytes: what MessagePacker.encode\n"
"returns. None when a value needs relay's extension types or is anything\n"
"else this encoder leaves to relay.wire's pure-Python path.");

static PyObject *
encode_body(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (check_count("encode_body", nargs, 4) < 0) {
        return NULL;
    }
    if (!PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "head and sender must be bytes");
        return NULL;
    }
    if (!PyFloat_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "sent_at must be a float");
        return NULL;
    }
    if (!PyDict_CheckExact(args[3])) {
        Py_RETURN_NONE;
    }
    Buffer buffer = {.size = 0, .capacity = sizeof buffer.inline_space};
    buffer.data = buffer.inline_space;
    int done = -1;
    if (put(&buffer, PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0])) == 0
        && put(&buffer, PyBytes_AS_STRING(args[1]), PyBytes_GET_SIZE(args[1])) == 0
        && write_double(&buffer, PyFloat_AS_DOUBLE(args[2])) == 0) {
        done = write_map(&buffer, args[3], 0);
    }
    PyObject *result = NULL;
    if (done > 0) {
        result = PyBytes_FromStringAndSize(buffer.data, buffer.size);
    }
    else if (done == 0) {
        result = Py_NewRef(Py_None);
    }
    if (buffer.data != buffer.inline_space) {
        PyMem_Free(buffer.data);
    }
    return result;
}

PyDoc_STRVAR(number_message_doc,
"number_message(message_id, seq, body, /)\n"
"--\n\n"
"relay.wire.number_message: the message of MessagePacker.body() with its\n"
"id and sequence number (0 <= seq < 2**64).");

static PyObject *
number_message(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (check_count("number_message", nargs, 3) < 0) {
        return NULL;
    }
    PyObject *id = args[0], *seq = args[1], *body = args[2];
    if (!PyBytes_CheckExact(id) || !PyBytes_CheckExact(body)) {
        PyErr_SetString(PyExc_TypeError, "message_id and body must be bytes");
        return NULL;
    }
    if (!PyLong_Check(seq)) {
        PyErr_Format(PyExc_TypeError, "seq must be an int, not %.100s", Py_TYPE(seq)->tp_name);
        return NULL;
    }
    unsigned long long number = PyLong_AsUnsignedLongLong(seq);
    if (number == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "seq must be in [0, 2**64), got %R", seq);
        return NULL;
    }
    Buffer buffer = {.size = 0, .capacity = sizeof buffer.inline_space};
    buffer.data = buffer.inline_space;
    static const unsigned char head[] = {0x96, 0xC4, ID_SIZE};
    int failed = put(&buffer, head, sizeof head) < 0
        || put(&buffer, PyBytes_AS_STRING(id), PyBytes_GET_SIZE(id)) < 0;
    if (!failed) {
        if (number < 128) {
            unsigned char small = (unsigned char)number;
            failed = put(&buffer, &small, 1) < 0;
        }
        else if (number < 256) {
            failed = write_typed(&buffer, 0xCC, number, 1) < 0;
        }
        else if (number < 65536) {
            failed = write_typed(&buffer, 0xCD, number, 2) < 0;
        }
        else if (number < 4294967296ULL) {
            failed = write_typed(&buffer, 0xCE, number, 4) < 0;
        }
        else {
            failed = write_typed(&buffer, 0xCF, number, 8) < 0;
        }
    }
    if (!failed) {
        failed = put(&buffer, PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body)) < 0;
    }
    PyObject *result = failed ? NULL : PyBytes_FromStringAndSize(buffer.data, buffer.size);
    if (buffer.data != buffer.inline_space) {
        PyMem_Free(buffer.data);
    }
    return result;
}

/* -- presence ------------------------------------------------------------- */

#define MAX_BUCKETS 64

PyDoc_STRVAR(latency_counts_doc,
"latency_counts(counts, buckets, now, messages, /)\n"
"--\n\n"
"What relay.presence.SignalMeter.observe computes: add each message's delay\n"
"(now - sent_at) to its bucket of counts (bisect_left over buckets) and\n"
"return (messages counted, the sum of the positive delays). None, with\n"
"counts untouched, for arguments of any other shape.");

static PyObject *
latency_counts(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (check_count("latency_counts", nargs, 4) < 0) {
        return NULL;
    }
    PyObject *counts = args[0], *buckets = args[1], *messages = args[3];
    if (!PyList_CheckExact(counts) || !PyTuple_CheckExact(buckets) || !PyFloat_CheckExact(args[2])
        || !PyList_CheckExact(messages)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t nbuckets = PyTuple_GET_SIZE(buckets);
    if (nbuckets > MAX_BUCKETS || PyList_GET_SIZE(counts) != nbuckets + 1) {
        Py_RETURN_NONE;
    }
    double bounds[MAX_BUCKETS];
    for (Py_ssize_t i = 0; i < nbuckets; i++) {
        PyObject *bound = PyTuple_GET_ITEM(buckets, i);
        if (!PyFloat_CheckExact(bound)) {
            Py_RETURN_NONE;
        }
        bounds[i] = PyFloat_AS_DOUBLE(bound);
    }
    for (Py_ssize_t i = 0; i <= nbuckets; i++) {
        if (!PyLong_CheckExact(PyList_GET_ITEM(counts, i))) {
            Py_RETURN_NONE;
        }
    }
    Py_ssize_t count = PyList_GET_SIZE(messages);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *message = PyList_GET_ITEM(messages, i);
        if (!PyTuple_Check(message) || PyTuple_GET_SIZE(message) < FIELDS
            || !PyFloat_CheckExact(PyTuple_GET_ITEM(message, 5))) {
            Py_RETURN_NONE;
        }
    }
    double now = PyFloat_AS_DOUBLE(args[2]);
    long long added[MAX_BUCKETS + 1] = {0};
    double total = 0.0;
    for (Py_ssize_t i = 0; i < count; i++) {
        double delay = now - PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(PyList_GET_ITEM(messages, i), 5));
        Py_ssize_t low = 0, high = nbuckets;  /* bisect.bisect_left */
        while (low < high) {
            Py_ssize_t middle = (low + high) / 2;
            if (bounds[middle] < delay) {
                low = middle + 1;
            }
            else {
                high = middle;
            }
        }
        added[low]++;
        if (delay > 0.0) {
            total += delay;
        }
    }
    for (Py_ssize_t i = 0; i <= nbuckets; i++) {
        if (added[i] == 0) {
            continue;
        }
        PyObject *more = PyLong_FromLongLong(added[i]);
        if (more == NULL) {
            return NULL;
        }
        PyObject *sum = PyNumber_Add(PyList_GET_ITEM(counts, i), more);
        Py_DECREF(more);
        if (sum == NULL) {
            return NULL;
        }
        PyList_SetItem(counts, i, sum);  /* steals sum */
    }
    return Py_BuildValue("(nd)", count, total);
}

/* -- firing receivers ------------------------------------------------------ */

#define INLINE_CALL 24

static PyObject *signal_str, *sender_str;  /* interned "signal" and "sender" */

/*
 * The keyword names and values of a receiver call:
 * (signal=signal, sender=sender, **named). Fills values (room for 2 + the size
 * of named) with borrowed references and returns the new tuple of names, or
 * NULL with an exception set. Every key of named must be a str other than
 * "signal" and "sender": the callers check.
 */
static PyObject *
call_names(PyObject *named, PyObject *signal, PyObject *sender, PyObject **values)
{
    PyObject *names = PyTuple_New(2 + PyDict_GET_SIZE(named));
    if (names == NULL) {
        return NULL;
    }
    Py_INCREF(signal_str);
    PyTuple_SET_ITEM(names, 0, signal_str);
    Py_INCREF(sender_str);
    PyTuple_SET_ITEM(names, 1, sender_str);
    values[0] = signal;
    values[1] = sender;
    Py_ssize_t position = 0, i = 2;
    PyObject *key, *value;
    while (PyDict_Next(named, &position, &key, &value)) {
        Py_INCREF(key);
        PyTuple_SET_ITEM(names, i, key);
        values[i++] = value;
    }
    return names;
}

/* 1 if every key of named is a str that is neither "signal" nor "sender". */
static int
plain_names(PyObject *named)
{
    Py_ssize_t position = 0;
    PyObject *key, *value;
    while (PyDict_Next(named, &position, &key, &value)) {
        if (!PyUnicode_CheckExact(key) || PyUnicode_Compare(key, signal_str) == 0
            || PyUnicode_Compare(key, sender_str) == 0) {
            return 0;
        }
    }
    return 1;
}

/*
 * Take the exception being raised, if it is an Exception, as `except
 * Exception as err` would (with its traceback): a new reference, or NULL with
 * the exception still set when it is a BaseException only.
 */
static PyObject *
catch_exception(void)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    return value;
#endif
}

/* Reset a context variable while an exception is being raised, keeping it. */
static void
reset_keeping_error(PyObject *variable, PyObject *token)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *raised = PyErr_GetRaisedException();
    if (PyContextVar_Reset(variable, token) < 0) {
        Py_XDECREF(raised);
        return;
    }
    PyErr_SetRaisedException(raised);
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    if (PyContextVar_Reset(variable, token) < 0) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        return;
    }
    PyErr_Restore(type, value, traceback);
#endif
}

PyDoc_STRVAR(send_to_doc,
"send_to(getters, signal, sender, named, on_error, /)\n"
"--\n\n"
"The receiver calls of relay.Signal.send (on_error None) or send_robust\n"
"(on_error(receiver, err) logs an Exception, which becomes that receiver's\n"
"response): call every getter first, as Django resolves every weak reference\n"
"first, then each receiver that is not None with (signal=signal,\n"
"sender=sender, **named). Returns the list of (receiver, response); None for\n"
"arguments of any other shape.");

static PyObject *
send_to(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (check_count("send_to", nargs, 5) < 0) {
        return NULL;
    }
    PyObject *getters = args[0], *named = args[3], *on_error = args[4];
    if (!PyTuple_CheckExact(getters) || !PyDict_CheckExact(named)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(getters);
    if (count == 0) {
        return PyList_New(0);
    }
    if (!plain_names(named)) {
        int has_signal = PyDict_Contains(named, signal_str);
        if (has_signal < 0) {
            return NULL;
        }
        if (has_signal) {
            PyErr_SetString(PyExc_TypeError,
                            "receivers got multiple values for keyword argument 'signal'");
            return NULL;
        }
        Py_RETURN_NONE;
    }
    Py_ssize_t width = 2 + PyDict_GET_SIZE(named);
    PyObject *inline_space[2 * INLINE_CALL];
    PyObject **space = inline_space;
    if (count + width > 2 * INLINE_CALL) {
        space = PyMem_New(PyObject *, count + width);
        if (space == NULL) {
            return PyErr_NoMemory();
        }
    }
    PyObject **receivers = space, **values = space + count;
    PyObject *names = NULL, *responses = NULL;
    Py_ssize_t resolved = 0;
    for (; resolved < count; resolved++) {
        receivers[resolved] = PyObject_CallNoArgs(PyTuple_GET_ITEM(getters, resolved));
        if (receivers[resolved] == NULL) {
            goto done;
        }
    }
    /* named is the send's own **named: no receiver can change it. */
    names = call_names(named, args[1], args[2], values);
    if (names == NULL || (responses = PyList_New(0)) == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *receiver = receivers[i];
        if (receiver == Py_None) {
            continue;
        }
        PyObject *response = PyObject_Vectorcall(receiver, values, 0, names);
        if (response == NULL) {
            if (on_error == Py_None || (response = catch_exception()) == NULL) {
                Py_CLEAR(responses);
                goto done;
            }
            PyObject *logged = PyObject_CallFunctionObjArgs(on_error, receiver, response, NULL);
            if (logged == NULL) {
                Py_DECREF(response);
                Py_CLEAR(responses);
                goto done;
            }
            Py_DECREF(logged);
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(response);
            Py_CLEAR(responses);
            goto done;
        }
        Py_INCREF(receiver);
        PyTuple_SET_ITEM(pair, 0, receiver);
        PyTuple_SET_ITEM(pair, 1, response);
        int failed = PyList_Append(responses, pair);
        Py_DECREF(pair);
        if (failed < 0) {
            Py_CLEAR(responses);
            goto done;
        }
    }
done:
    for (Py_ssize_t i = 0; i < resolved; i++) {
        Py_DECREF(receivers[i]);
    }
    Py_XDECREF(names);
    if (space != inline_space) {
        PyMem_Free(space);
    }
    return responses;
}

/*
 * receiver(signal=signal, sender=sender, **named) for a named whose keys are
 * plain (see plain_names). The values are held for the call: the receiver
 * may change named meanwhile.
 */
static PyObject *
call_receiver(PyObject *receiver, PyObject *named, PyObject *signal, PyObject *sender)
{
    PyObject *inline_values[INLINE_CALL];
    PyObject **values = inline_values;
    Py_ssize_t width = 2 + PyDict_GET_SIZE(named);
    if (width > INLINE_CALL && (values = PyMem_New(PyObject *, width)) == NULL) {
        return PyErr_NoMemory();
    }
    PyObject *response = NULL;
    PyObject *names = call_names(named, signal, sender, values);
    if (names != NULL) {
        for (Py_ssize_t k = 2; k < width; k++) {
            Py_INCREF(values[k]);
        }
        response = PyObject_Vectorcall(receiver, values, 0, names);
        for (Py_ssize_t k = 2; k < width; k++) {
            Py_DECREF(values[k]);
        }
        Py_DECREF(names);
    }
    if (values != inline_values) {
        PyMem_Free(values);
    }
    return response;
}

PyDoc_STRVAR(fire_messages_doc,
"fire_messages(messages, start, name, calls, signal, current, on_error, /)\n"
"--\n\n"
"What relay.Relay._handle does for each received message from\n"
"messages[start] on, while its sender is name and it carries no trace\n"
"context: set the context variable current to it, call each receiver of\n"
"calls ((getter or receiver, weak, sender) triples) that is alive with\n"
"(signal=signal, sender=sender, **message.kwargs), on_error(receiver,\n"
"message, err) for each Exception, reset current. Returns (stop, receivers\n"
"called, errors, resume): messages[stop] is the first not fired in full.\n"
"resume is -1, or the index in calls of the first receiver of\n"
"messages[stop] not called because the keyword arguments are not (or no\n"
"longer) all str names other than signal and sender: the caller fires it\n"
"and the rest. None for arguments of any other shape.");

static PyObject *
fire_messages(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (check_count("fire_messages", nargs, 7) < 0) {
        return NULL;
    }
    PyObject *messages = args[0], *name = args[2], *calls = args[3], *signal = args[4];
    PyObject *current = args[5], *on_error = args[6];
    if (!PyList_CheckExact(messages) || !PyLong_CheckExact(args[1]) || !PyTuple_CheckExact(calls)
        || !PyContextVar_CheckExact(current)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t ncalls = PyTuple_GET_SIZE(calls);
    for (Py_ssize_t c = 0; c < ncalls; c++) {
        PyObject *call = PyTuple_GET_ITEM(calls, c);
        if (!PyTuple_CheckExact(call) || PyTuple_GET_SIZE(call) != 3
            || !PyBool_Check(PyTuple_GET_ITEM(call, 1))) {
            Py_RETURN_NONE;
        }
    }
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    if (i < 0) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    Py_ssize_t fired = 0, errors = 0, resume = -1;
    for (; i < PyList_GET_SIZE(messages) && resume < 0; i++) {
        PyObject *message = PyList_GET_ITEM(messages, i);
        if (!PyTuple_Check(message) || PyTuple_GET_SIZE(message) != MESSAGE_FIELDS
            || PyTuple_GET_ITEM(message, 7) != Py_None
            || !PyDict_CheckExact(PyTuple_GET_ITEM(message, 6))) {
            break;
        }
        PyObject *sender_name = PyTuple_GET_ITEM(message, 4);
        if (sender_name != name) {
            int same = PyObject_RichCompareBool(sender_name, name, Py_EQ);
            if (same < 0) {
                return NULL;
            }
            if (!same) {
                break;
            }
        }
        Py_INCREF(message);
        PyObject *kwargs = PyTuple_GET_ITEM(message, 6);
        PyObject *token = PyContextVar_Set(current, message);
        int failed = token == NULL;
        for (Py_ssize_t c = 0; c < ncalls && !failed; c++) {
            PyObject *call = PyTuple_GET_ITEM(calls, c);
            PyObject *receiver = PyTuple_GET_ITEM(call, 0);
            if (PyTuple_GET_ITEM(call, 1) == Py_True) {
                receiver = PyObject_CallNoArgs(receiver);
                if (receiver == NULL) {
                    failed = 1;
                    break;
                }
                if (receiver == Py_None) {
                    Py_DECREF(receiver);
                    continue;
                }
            }
            else {
                Py_INCREF(receiver);
            }
            /* Checked before every call: an earlier receiver may have changed
             * the message's keyword arguments (current_message().kwargs). */
            if (!plain_names(kwargs)) {
                Py_DECREF(receiver);
                resume = c;
                break;
            }
            fired++;
            PyObject *response = call_receiver(receiver, kwargs, signal, PyTuple_GET_ITEM(call, 2));
            if (response != NULL) {
                Py_DECREF(response);
            }
            else if ((response = catch_exception()) == NULL) {
                failed = 1;
            }
            else {
                errors++;
                PyObject *logged =
                    PyObject_CallFunctionObjArgs(on_error, receiver, message, response, NULL);
                Py_DECREF(response);
                if (logged == NULL) {
                    failed = 1;
                }
                Py_XDECREF(logged);
            }
            Py_DECREF(receiver);
        }
        if (token != NULL) {
            if (failed) {
                reset_keeping_error(current, token);
            }
            else if (PyContextVar_Reset(current, token) < 0) {
                failed = 1;
            }
            Py_DECREF(token);
        }
        Py_DECREF(message);
        if (failed) {
            return NULL;
        }
        if (resume >= 0) {
            break;  /* before i++: the caller fires the rest of message i */
        }
    }
    return Py_BuildValue("(nnnn)", i, fired, errors, resume);
}

static PyMethodDef speedups_methods[] = {
    {"plain_messages", (PyCFunction)(void (*)(void))plain_messages, METH_FASTCALL,
     plain_messages_doc},
    {"encode_body", (PyCFunction)(void (*)(void))encode_body, METH_FASTCALL, encode_body_doc},
    {"number_message", (PyCFunction)(void (*)(void))number_message, METH_FASTCALL,
     number_message_doc},
    {"latency_counts", (PyCFunction)(void (*)(void))latency_counts, METH_FASTCALL,
     latency_counts_doc},
    {"send_to", (PyCFunction)(void (*)(void))send_to, METH_FASTCALL, send_to_doc},
    {"fire_messages", (PyCFunction)(void (*)(void))fire_messages, METH_FASTCALL,
     fire_messages_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "relay._speedups",
    .m_doc = "Optional C versions of relay.wire's hottest functions.",
    .m_size = 0,
    .m_methods = speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (signal_str == NULL && (signal_str = PyUnicode_InternFromString("signal")) == NULL) {
        return NULL;
    }
    if (sender_str == NULL && (sender_str = PyUnicode_InternFromString("sender")) == NULL) {
        return NULL;
    }
    return PyModuleDef_Init(&speedups_module);
}
