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
// Launch: grid = ceil(N / block), block = (block, 1, 1).

template <typename real>
__device__ void gae_impl(const real* __restrict__ rewards, const real* __restrict__ values,
                         const real* __restrict__ dones, const real* __restrict__ last_values,
                         real gamma, real gamma_lam, int T, int N,
                         real* __restrict__ adv, real* __restrict__ returns) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    real next_value = last_values[n];
    real next_adv = real(0);
    for (int t = T - 1; t >= 0; --t) {
        const long long i = (long long)t * N + n;
        const real not_done = real(1) - dones[i];
        const real v = values[i];
        const real delta = rewards[i] + gamma * next_value * not_done - v;
        next_adv = delta + gamma_lam * not_done * next_adv;
        adv[i] = next_adv;
        returns[i] = next_adv + v;
        next_value = v;
    }
}

extern "C" __global__ void gae_f32(const float* rewards, const float* values, const float* dones,
                                   const float* last_values, float gamma, float gamma_lam, int T,
                                   int N, float* adv, float* returns) {
    gae_impl<float>(rewards, values, dones, last_values, gamma, gamma_lam, T, N, adv, returns);
}

extern "C" __global__ void gae_f64(const double* rewards, const double* values,
                                   const double* dones, const double* last_values, double gamma,
                                   double gamma_lam, int T, int N, double* adv, double* returns) {
    gae_impl<double>(rewards, values, dones, last_values, gamma, gamma_lam, T, N, adv, returns);
}
