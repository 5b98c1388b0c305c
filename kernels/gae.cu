// GAE over a rollout, one thread per environment looping backward over time.
//
// Arrays are (T, N) row-major: element (t, n) at t * N + n, so at each step the threads of a warp
// (consecutive n) read consecutive addresses (coalesced). last_values is (N,) = V(s_T).
//
//   delta_t   = r_t + gamma * V_{t+1} * (1 - d_t) - V_t
//   A^{GAE}_t = delta_t + gamma * lambda * (1 - d_t) * A^{GAE}_{t+1},   V_T = last_values
//   returns_t = A^{GAE}_t + V_t
//
// gamma_lam is gamma * lambda rounded once on the host, as numpy does, and gpu.py compiles with
// --fmad=false so that a * b + c is not contracted into an FMA: results then match the numpy and
// numba backends operation for operation, bit for bit.
//
// A rollout has few environments (often one or two warps on the whole GPU), so each thread's time
// is what counts, and a step's loads do not depend on the recursion: the thread loads GAE_CHUNK
// steps into registers, then runs the recursion over them. It waits for memory once per chunk
// instead of once per step. Any GAE_CHUNK >= 1 gives the same results (the same operations in the
// same order); docs/kernels.md gives the times measured for 1, 4, 8, 16 and 32.
// Launch: grid = ceil(N / block), block = (block, 1, 1).
//
// dones must be 0 or 1. dones_check_* runs first, on the same stream: it sets *bad to 1 where an
// entry is anything else (NaN too), and the GAE kernel then returns before writing anything, so an
// out= array given by the caller is left as it was. The host reads *bad back once, after both
// (one sync, where a check by array operations took four operations and a sync of its own).

#ifndef GAE_CHUNK
#define GAE_CHUNK 16
#endif

// One step of the recursion at element i, carrying V_{t+1} and A_{t+1} down to step t.
template <typename real>
__device__ void gae_step(real r, real v, real not_done, real gamma, real gamma_lam, long long i,
                         real& next_value, real& next_adv, real* __restrict__ adv,
                         real* __restrict__ returns) {
    const real delta = r + gamma * next_value * not_done - v;
    next_adv = delta + gamma_lam * not_done * next_adv;
    adv[i] = next_adv;
    returns[i] = next_adv + v;
    next_value = v;
}

// *bad = 1 where some entry of dones (T * N of them) is neither 0 nor 1; a grid-stride loop, so
// any grid covers it. bad starts at 0 (the host zeroes it); racing stores all write 1.
template <typename real>
__device__ void dones_check_impl(const real* __restrict__ dones, int T, int N, int* __restrict__ bad) {
    const long long size = (long long)T * N;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < size; i += stride) {
        const real d = dones[i];
        if (d != real(0) && d != real(1)) *bad = 1;  // NaN compares unequal to both
    }
}

template <typename real>
__device__ void gae_impl(const real* __restrict__ rewards, const real* __restrict__ values,
                         const real* __restrict__ dones, const real* __restrict__ last_values,
                         real gamma, real gamma_lam, int T, int N,
                         real* __restrict__ adv, real* __restrict__ returns, const int* __restrict__ bad) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N || *bad) return;
    real next_value = last_values[n];
    real next_adv = real(0);
    int t = T - 1;
    for (; t + 1 >= GAE_CHUNK; t -= GAE_CHUNK) {  // whole chunks: steps t, t - 1, ..., t - GAE_CHUNK + 1
        real r[GAE_CHUNK], v[GAE_CHUNK], not_done[GAE_CHUNK];
#pragma unroll
        for (int k = 0; k < GAE_CHUNK; ++k) {
            const long long i = (long long)(t - k) * N + n;
            r[k] = rewards[i];
            v[k] = values[i];
            not_done[k] = real(1) - dones[i];
        }
#pragma unroll
        for (int k = 0; k < GAE_CHUNK; ++k) {
            gae_step(r[k], v[k], not_done[k], gamma, gamma_lam, (long long)(t - k) * N + n, next_value,
                     next_adv, adv, returns);
        }
    }
    for (; t >= 0; --t) {  // the first T % GAE_CHUNK steps, one at a time
        const long long i = (long long)t * N + n;
        gae_step(rewards[i], values[i], real(1) - dones[i], gamma, gamma_lam, i, next_value, next_adv,
                 adv, returns);
    }
}

extern "C" __global__ void dones_check_f32(const float* dones, int T, int N, int* bad) {
    dones_check_impl<float>(dones, T, N, bad);
}

extern "C" __global__ void dones_check_f64(const double* dones, int T, int N, int* bad) {
    dones_check_impl<double>(dones, T, N, bad);
}

extern "C" __global__ void gae_f32(const float* rewards, const float* values, const float* dones,
                                   const float* last_values, float gamma, float gamma_lam, int T,
                                   int N, float* adv, float* returns, const int* bad) {
    gae_impl<float>(rewards, values, dones, last_values, gamma, gamma_lam, T, N, adv, returns, bad);
}

extern "C" __global__ void gae_f64(const double* rewards, const double* values,
                                   const double* dones, const double* last_values, double gamma,
                                   double gamma_lam, int T, int N, double* adv, double* returns,
                                   const int* bad) {
    gae_impl<double>(rewards, values, dones, last_values, gamma, gamma_lam, T, N, adv, returns, bad);
}
