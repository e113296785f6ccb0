/*
 * abi_plugin.h - the abi hardware backend plugin ABI (C).
 *
 * A plugin is a shared library exporting one symbol:
 *
 *     const abi_backend *abi_plugin_entry(void);
 *
 * It returns a pointer to a static descriptor that lives as long as the library. The descriptor
 * begins with `struct_size` and `abi_version`; the host refuses a plugin whose abi_version it
 * does not know and reads only the first `struct_size` bytes of the table, so tables only ever
 * grow at the end and a newer host loads an older plugin.
 *
 * Rules:
 *  - No C++ exception or Rust panic may cross these functions; report failures as abi_status and
 *    make the message readable with last_error() on the same thread.
 *  - Calls on one context are never concurrent (the host serialises them); different contexts
 *    may be used from different threads at once.
 *  - All element data is little-endian f32 unless stated; index outputs are u32.
 *
 * This header is kept in sync with the Rust types in abi-sdk (sdk/src/ffi.rs); a test compiles a
 * C plugin from this header alone and loads it.
 */
#ifndef ABI_PLUGIN_H
#define ABI_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The newest ABI version this header describes. */
#define ABI_PLUGIN_ABI_VERSION 2u
/* The entry symbol's name. */
#define ABI_PLUGIN_ENTRY_SYMBOL "abi_plugin_entry"

/* Status codes returned by every fallible call. */
typedef int32_t abi_status;
#define ABI_OK 0
#define ABI_ERR_INVALID_ARGUMENT 1 /* bad sizes, null pointers, unknown op */
#define ABI_ERR_OUT_OF_MEMORY 2
#define ABI_ERR_UNSUPPORTED 3      /* op or device feature not provided */
#define ABI_ERR_DEVICE 4           /* the device or driver failed */
#define ABI_ERR_PANIC 5            /* the plugin caught a panic/exception */
#define ABI_ERR_NOT_INITIALIZED 6  /* init() was not called or failed */

/* Device kinds. */
#define ABI_DEVICE_CPU 0u
#define ABI_DEVICE_GPU 1u
#define ABI_DEVICE_SOFTWARE_GPU 2u /* e.g. Mesa lavapipe */

/* Operations. Capability bit of an op = 1 << op. */
#define ABI_OP_VECTOR_ADD 0u    /* n: c[n] = a[n] + b[n]; inputs a, b; output c */
#define ABI_OP_MATMUL 1u        /* m, k, n: c[m*n] = a[m*k] x b[k*n], row-major; inputs a, b; output c */
#define ABI_OP_REDUCE_SUM 2u    /* n: y[1] = sum x[n]; input x; output y */
#define ABI_OP_DOT 3u           /* n: y[1] = sum a[i]*b[i]; inputs a, b; output y */
#define ABI_OP_SOFTMAX 4u       /* m rows, n cols: row-wise softmax; input x[m*n]; output y[m*n] */
#define ABI_OP_DISTANCE_TOPK 5u /* m queries, k dim, n vectors, top_k, metric: inputs q[m*k], v[n*k];
                                   outputs scores f32[m*top_k], indices u32[m*top_k], best first */
#define ABI_OP_COUNT 6u

/* Metrics of ABI_OP_DISTANCE_TOPK. Cosine and dot score similarity (best = highest);
   l2 scores the squared euclidean distance (best = lowest). Ties keep the lower index first. */
#define ABI_METRIC_COSINE 0u
#define ABI_METRIC_DOT 1u
#define ABI_METRIC_L2 2u

/* One device as the plugin sees it. */
typedef struct abi_device_info {
    uint32_t struct_size;  /* sizeof(abi_device_info) as the host knows it; set by the host */
    uint32_t kind;         /* ABI_DEVICE_* */
    char name[128];        /* NUL-terminated UTF-8 */
    uint64_t memory_total; /* bytes */
    uint64_t memory_free;  /* bytes, best effort */
    uint64_t capabilities; /* bit (1 << ABI_OP_*) for every op supported */
} abi_device_info;

/* One operation invocation. Dimensions mean what the ABI_OP_* comment says. */
typedef struct abi_op {
    uint32_t struct_size; /* sizeof(abi_op) */
    uint32_t kind;        /* ABI_OP_* */
    uint64_t m;
    uint64_t k;
    uint64_t n;
    uint32_t top_k;
    uint32_t metric;      /* ABI_METRIC_* */
} abi_op;

/* Opaque, plugin-owned objects. */
typedef struct abi_context abi_context;
typedef struct abi_buffer abi_buffer;

/* The descriptor and function table. Append new fields at the end only. */
typedef struct abi_backend {
    /* ---- version 1 ---- */
    uint32_t struct_size; /* sizeof(abi_backend) as the plugin was compiled */
    uint32_t abi_version; /* ABI_PLUGIN_ABI_VERSION the plugin was compiled against */
    const char *name;     /* static NUL-terminated, e.g. "cpu" */
    const char *version;  /* static NUL-terminated, e.g. "0.1.0" */

    /* One-time initialisation; must be called (once) before anything below but last_error. */
    abi_status (*init)(void);
    /* Number of devices (0 is valid: e.g. no driver present). */
    uint32_t (*device_count)(void);
    /* Fills *out (whose struct_size the host set) for device `index`. */
    abi_status (*device_info)(uint32_t index, abi_device_info *out);
    abi_status (*context_create)(uint32_t device, abi_context **out);
    void (*context_destroy)(abi_context *ctx);
    abi_status (*buffer_alloc)(abi_context *ctx, uint64_t bytes, abi_buffer **out);
    void (*buffer_free)(abi_context *ctx, abi_buffer *buf);
    abi_status (*buffer_upload)(abi_context *ctx, abi_buffer *buf, uint64_t offset, const void *src,
                                uint64_t len);
    abi_status (*buffer_download)(abi_context *ctx, const abi_buffer *buf, uint64_t offset, void *dst,
                                  uint64_t len);
    /* Runs op on the context's device. Outputs must be distinct from each other and the inputs. */
    abi_status (*run_op)(abi_context *ctx, const abi_op *op, abi_buffer *const *inputs, uint32_t n_inputs,
                         abi_buffer *const *outputs, uint32_t n_outputs);
    /* Copies this thread's last error message (NUL-terminated, truncated to cap) and returns its
       full length in bytes (0 when there is none). */
    size_t (*last_error)(char *buf, size_t cap);

    /* ---- version 2 ---- */
    /* Proves the context's device can do work (a tiny real computation). */
    abi_status (*health_check)(abi_context *ctx);
} abi_backend;

/* The size of a version-1 table: the host accepts any struct_size >= this. */
#define ABI_BACKEND_V1_SIZE offsetof(abi_backend, health_check)

typedef const abi_backend *(*abi_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* ABI_PLUGIN_H */
