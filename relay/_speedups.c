/*
 * relay._speedups: an optional accelerator for relay.wire.
 *
 * relay works without it: relay.wire has a pure-Python version of every
 * function here and uses it when this module is missing or when the
 * environment variable RELAY_PURE_PYTHON is set. Both give the same result
 * for every input; tests/test_speedups.py checks that they do.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

#define ID_SIZE 16
#define FIELDS 6
#define MESSAGE_FIELDS 8

static const char HEX_DIGITS[] = "0123456789abcdef";

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
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "plain_messages() takes 4 arguments (%zd given)", nargs);
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

static PyMethodDef speedups_methods[] = {
    {"plain_messages", (PyCFunction)(void (*)(void))plain_messages, METH_FASTCALL,
     plain_messages_doc},
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
    return PyModuleDef_Init(&speedups_module);
}
