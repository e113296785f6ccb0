//! WGSL compute kernels, one per op (plus a reduction pass shared by reduce_sum and dot).
//! Every kernel takes the same 8 x u32 uniform `Params` at binding 0; 1-D kernels linearise a
//! 2-D dispatch grid so more than 65,535 workgroups can run.

const PARAMS: &str = "struct Params { a: u32, b: u32, c: u32, d: u32, e: u32, f: u32, g: u32, h: u32 }\n\
@group(0) @binding(0) var<uniform> p: Params;\n";

/// Work items per workgroup of the 1-D kernels.
pub const WG: u32 = 256;
/// Elements each reduction workgroup consumes (WG threads x 8).
pub const REDUCE_SPAN: u32 = 2048;
/// Matmul: each invocation computes a BLOCK x BLOCK block; workgroups are 8 x 8 invocations.
pub const BLOCK: u32 = 4;
/// Matmul workgroup edge (invocations).
pub const MM_WG: u32 = 8;

/// A kernel's name and full WGSL source.
pub fn source(name: &str) -> Option<String> {
    let body = match name {
        "vector_add" => VECTOR_ADD,
        "reduce" => REDUCE,
        "dot" => DOT,
        "matmul" => MATMUL,
        "softmax" => SOFTMAX,
        "scores" => SCORES,
        "topk" => TOPK,
        _ => return None,
    };
    Some(format!("{PARAMS}{body}"))
}

const VECTOR_ADD: &str = r#"
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> z: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    if (i < p.a) {
        z[i] = x[i] + y[i];
    }
}
"#;

// p.a = number of input elements; writes one partial sum per workgroup.
const REDUCE: &str = r#"
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
var<workgroup> sh: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = wid.y * nwg.x + wid.x;
    let base = g * 2048u;
    var s = 0.0;
    for (var j = 0u; j < 8u; j = j + 1u) {
        let i = base + j * 256u + lid;
        if (i < p.a) { s = s + x[i]; }
    }
    sh[lid] = s;
    workgroupBarrier();
    for (var off = 128u; off > 0u; off = off >> 1u) {
        if (lid < off) { sh[lid] = sh[lid] + sh[lid + off]; }
        workgroupBarrier();
    }
    if (lid == 0u) { out[g] = sh[0]; }
}
"#;

// First pass of dot: partial sums of x[i] * y[i].
const DOT: &str = r#"
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
var<workgroup> sh: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = wid.y * nwg.x + wid.x;
    let base = g * 2048u;
    var s = 0.0;
    for (var j = 0u; j < 8u; j = j + 1u) {
        let i = base + j * 256u + lid;
        if (i < p.a) { s = s + x[i] * y[i]; }
    }
    sh[lid] = s;
    workgroupBarrier();
    for (var off = 128u; off > 0u; off = off >> 1u) {
        if (lid < off) { sh[lid] = sh[lid] + sh[lid + off]; }
        workgroupBarrier();
    }
    if (lid == 0u) { out[g] = sh[0]; }
}
"#;

// p.a = m, p.b = k, p.c = n. Each invocation computes a 4x4 block of c in registers, with
// no workgroup memory and no barriers (barriers are expensive on CPU implementations such as
// lavapipe). Out-of-range rows/columns read clamped (valid) addresses and are not stored, so
// the inner loop has no branches.
const MATMUL: &str = r#"
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let M = p.a;
    let K = p.b;
    let N = p.c;
    let r0 = gid.y * 4u;
    let c0 = gid.x * 4u;
    if (r0 >= M || c0 >= N) { return; }
    let a0 = min(r0, M - 1u) * K;
    let a1 = min(r0 + 1u, M - 1u) * K;
    let a2 = min(r0 + 2u, M - 1u) * K;
    let a3 = min(r0 + 3u, M - 1u) * K;
    let j0 = c0;
    let j1 = min(c0 + 1u, N - 1u);
    let j2 = min(c0 + 2u, N - 1u);
    let j3 = min(c0 + 3u, N - 1u);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var kk = 0u; kk < K; kk = kk + 1u) {
        let row = kk * N;
        let bv = vec4<f32>(b[row + j0], b[row + j1], b[row + j2], b[row + j3]);
        acc0 = acc0 + a[a0 + kk] * bv;
        acc1 = acc1 + a[a1 + kk] * bv;
        acc2 = acc2 + a[a2 + kk] * bv;
        acc3 = acc3 + a[a3 + kk] * bv;
    }
    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < 4u; i = i + 1u) {
        let r = r0 + i;
        if (r < M) {
            for (var j = 0u; j < 4u; j = j + 1u) {
                if (c0 + j < N) { c[r * N + c0 + j] = accs[i][j]; }
            }
        }
    }
}
"#;

// p.a = rows, p.b = cols; one workgroup per row.
const SOFTMAX: &str = r#"
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
var<workgroup> sh: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = wid.y * nwg.x + wid.x;
    if (r >= p.a) { return; }
    let cols = p.b;
    let base = r * cols;
    var m = -3.40282347e38;
    for (var j = lid; j < cols; j = j + 256u) { m = max(m, x[base + j]); }
    sh[lid] = m;
    workgroupBarrier();
    for (var off = 128u; off > 0u; off = off >> 1u) {
        if (lid < off) { sh[lid] = max(sh[lid], sh[lid + off]); }
        workgroupBarrier();
    }
    let mx = sh[0];
    workgroupBarrier();
    var s = 0.0;
    for (var j = lid; j < cols; j = j + 256u) { s = s + exp(x[base + j] - mx); }
    sh[lid] = s;
    workgroupBarrier();
    for (var off = 128u; off > 0u; off = off >> 1u) {
        if (lid < off) { sh[lid] = sh[lid] + sh[lid + off]; }
        workgroupBarrier();
    }
    let total = sh[0];
    for (var j = lid; j < cols; j = j + 256u) { y[base + j] = exp(x[base + j] - mx) / total; }
}
"#;

// p.a = n vectors, p.b = dim, p.c = queries in this batch, p.d = metric, p.e = first query.
// Writes a "higher is better" key per (query, vector): cosine, dot, or -l2.
const SCORES: &str = r#"
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> keys: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.y * nwg.x + wid.x) * 256u + lid;
    let n = p.a;
    let dim = p.b;
    if (idx >= n * p.c) { return; }
    let qi = idx / n;
    let j = idx % n;
    let qb = (p.e + qi) * dim;
    let vb = j * dim;
    var d = 0.0;
    var nq = 0.0;
    var nv = 0.0;
    var l2 = 0.0;
    for (var t = 0u; t < dim; t = t + 1u) {
        let a = q[qb + t];
        let b = v[vb + t];
        d = d + a * b;
        nq = nq + a * a;
        nv = nv + b * b;
        let e = a - b;
        l2 = l2 + e * e;
    }
    var key = d;
    if (p.d == 0u) {
        let den = sqrt(nq * nv);
        if (den > 0.0) { key = d / den; } else { key = 0.0; }
    } else if (p.d == 2u) {
        key = -l2;
    }
    keys[idx] = key;
}
"#;

// p.a = n, p.b = k, p.c = queries in batch, p.d = metric, p.e = first query.
// One workgroup per query; k rounds of a workgroup arg-max over the candidates ranked after
// the previous pick (key lower, or equal key and higher index).
const TOPK: &str = r#"
@group(0) @binding(1) var<storage, read> keys: array<f32>;
@group(0) @binding(2) var<storage, read_write> out_s: array<f32>;
@group(0) @binding(3) var<storage, read_write> out_i: array<u32>;
var<workgroup> sk: array<f32, 256>;
var<workgroup> si: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let qi = wid.y * nwg.x + wid.x;
    if (qi >= p.c) { return; }
    let n = p.a;
    let k = p.b;
    let base = qi * n;
    var ps = 3.40282347e38;
    var pi = 0u;
    for (var r = 0u; r < k; r = r + 1u) {
        var bs = -3.40282347e38;
        var bi = 0xffffffffu;
        for (var j = lid; j < n; j = j + 256u) {
            let s = keys[base + j];
            let eligible = (r == 0u) || (s < ps) || (s == ps && j > pi);
            if (eligible && (s > bs || (s == bs && j < bi))) {
                bs = s;
                bi = j;
            }
        }
        sk[lid] = bs;
        si[lid] = bi;
        workgroupBarrier();
        for (var off = 128u; off > 0u; off = off >> 1u) {
            if (lid < off) {
                let os = sk[lid + off];
                let oi = si[lid + off];
                if (os > sk[lid] || (os == sk[lid] && oi < si[lid])) {
                    sk[lid] = os;
                    si[lid] = oi;
                }
            }
            workgroupBarrier();
        }
        ps = sk[0];
        pi = si[0];
        if (lid == 0u) {
            let o = (p.e + qi) * k + r;
            if (p.d == 2u) { out_s[o] = -ps; } else { out_s[o] = ps; }
            out_i[o] = pi;
        }
        workgroupBarrier();
    }
}
"#;
