//! CUDA C kernels compiled at run time with NVRTC (one module, loaded once per context).

/// Threads per block of every kernel.
pub const BLOCK: u32 = 256;

/// Names of the kernels in [`SOURCE`].
pub const NAMES: [&str; 7] = [
    "vector_add",
    "reduce_sum",
    "dot",
    "softmax",
    "scores",
    "topk",
    "fill_zero",
];

/// The module source.
pub const SOURCE: &str = r#"
#define BLK 256
__device__ __forceinline__ unsigned int block_linear() { return blockIdx.y * gridDim.x + blockIdx.x; }

extern "C" __global__ void vector_add(const float* a, const float* b, float* c, unsigned int n) {
    unsigned long long i = (unsigned long long)block_linear() * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

extern "C" __global__ void fill_zero(float* x, unsigned int n) {
    unsigned long long i = (unsigned long long)block_linear() * blockDim.x + threadIdx.x;
    if (i < n) x[i] = 0.0f;
}

__device__ void block_sum_to(float s, float* out) {
    __shared__ float sh[BLK];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (unsigned int o = BLK / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) sh[threadIdx.x] += sh[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) atomicAdd(out, sh[0]);
}

extern "C" __global__ void reduce_sum(const float* x, float* out, unsigned int n) {
    float s = 0.0f;
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) s += x[i];
    block_sum_to(s, out);
}

extern "C" __global__ void dot(const float* a, const float* b, float* out, unsigned int n) {
    float s = 0.0f;
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) s += a[i] * b[i];
    block_sum_to(s, out);
}

extern "C" __global__ void softmax(const float* x, float* y, unsigned int rows, unsigned int cols) {
    __shared__ float sh[BLK];
    unsigned int r = block_linear();
    if (r >= rows) return;
    const float* xr = x + (unsigned long long)r * cols;
    float* yr = y + (unsigned long long)r * cols;
    float m = -3.402823466e38f;
    for (unsigned int j = threadIdx.x; j < cols; j += BLK) m = fmaxf(m, xr[j]);
    sh[threadIdx.x] = m;
    __syncthreads();
    for (unsigned int o = BLK / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + o]);
        __syncthreads();
    }
    float mx = sh[0];
    __syncthreads();
    float s = 0.0f;
    for (unsigned int j = threadIdx.x; j < cols; j += BLK) s += expf(xr[j] - mx);
    sh[threadIdx.x] = s;
    __syncthreads();
    for (unsigned int o = BLK / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) sh[threadIdx.x] += sh[threadIdx.x + o];
        __syncthreads();
    }
    float total = sh[0];
    for (unsigned int j = threadIdx.x; j < cols; j += BLK) yr[j] = expf(xr[j] - mx) / total;
}

// keys[qi * n + j] for queries q0..q0+qb: cosine, dot, or -l2 ("higher is better").
extern "C" __global__ void scores(const float* q, const float* v, float* keys, unsigned int n,
                                  unsigned int dim, unsigned int qb, unsigned int metric, unsigned int q0) {
    unsigned long long idx = (unsigned long long)block_linear() * blockDim.x + threadIdx.x;
    if (idx >= (unsigned long long)n * qb) return;
    unsigned int qi = (unsigned int)(idx / n);
    unsigned int j = (unsigned int)(idx % n);
    const float* qq = q + (unsigned long long)(q0 + qi) * dim;
    const float* vv = v + (unsigned long long)j * dim;
    float d = 0.0f, nq = 0.0f, nv = 0.0f, l2 = 0.0f;
    for (unsigned int t = 0; t < dim; t++) {
        float a = qq[t], b = vv[t];
        d += a * b; nq += a * a; nv += b * b;
        float e = a - b; l2 += e * e;
    }
    float key = d;
    if (metric == 0) { float den = sqrtf(nq * nv); key = den > 0.0f ? d / den : 0.0f; }
    else if (metric == 2) key = -l2;
    keys[idx] = key;
}

// One block per query: k rounds of block arg-max over candidates ranked after the last pick.
extern "C" __global__ void topk(const float* keys, float* out_s, unsigned int* out_i, unsigned int n,
                                unsigned int k, unsigned int qb, unsigned int metric, unsigned int q0) {
    __shared__ float sk[BLK];
    __shared__ unsigned int si[BLK];
    unsigned int qi = block_linear();
    if (qi >= qb) return;
    const float* row = keys + (unsigned long long)qi * n;
    float ps = 3.402823466e38f;
    unsigned int pi = 0;
    for (unsigned int r = 0; r < k; r++) {
        float bs = -3.402823466e38f;
        unsigned int bi = 0xffffffffu;
        for (unsigned int j = threadIdx.x; j < n; j += BLK) {
            float s = row[j];
            bool eligible = (r == 0) || (s < ps) || (s == ps && j > pi);
            if (eligible && (s > bs || (s == bs && j < bi))) { bs = s; bi = j; }
        }
        sk[threadIdx.x] = bs;
        si[threadIdx.x] = bi;
        __syncthreads();
        for (unsigned int o = BLK / 2; o > 0; o >>= 1) {
            if (threadIdx.x < o) {
                float os = sk[threadIdx.x + o];
                unsigned int oi = si[threadIdx.x + o];
                if (os > sk[threadIdx.x] || (os == sk[threadIdx.x] && oi < si[threadIdx.x])) {
                    sk[threadIdx.x] = os;
                    si[threadIdx.x] = oi;
                }
            }
            __syncthreads();
        }
        ps = sk[0];
        pi = si[0];
        if (threadIdx.x == 0) {
            unsigned long long o = (unsigned long long)(q0 + qi) * k + r;
            out_s[o] = metric == 2 ? -ps : ps;
            out_i[o] = pi;
        }
        __syncthreads();
    }
}
"#;
