// The rollout's policy forward in one launch (MINIPPO_BACKEND=cupy): ActorCritic.act's actor and
// critic MLPs, and for a Gaussian policy its clipped log-std beside the mean.
//
// Done with array operations, one act at batch 8 on a 64-64 actor-critic is ~16 device operations
// for the two MLPs alone (three matmuls, three bias adds and two activations each), each costing a
// launch and some 10 us of host time, for ~10^4 multiply-adds. Here each block computes one row of
// one network, layer after layer, keeping the row's activations in shared memory:
//
//   h_0 = x[row]                                     (obs_dim,)
//   h_{l+1}[j] = act(b_l[j] + sum_k h_l[k] W_l[k, j])  for the hidden layers (tanh or relu)
//   y[row, j]  = b_L[j] + sum_k h_L[k] W_L[k, j]        the output layer, no activation
//
// summed in that order (the bias first, then k = 0, 1, ...), as kernels/reference.py's
// linear_forward does. The sums are in the kernel's type, as cuBLAS sums; with --fmad=false
// (gpu.py) no a * b + c is contracted, so the CPU shim of tests/cuda_shim.py rounds as the device
// does. tanh is CUDA's tanhf / tanh, which cupy.tanh also calls.
//
// table (long longs): [L_0, L_1, then 4 per layer: W's address, b's address, fan_in, fan_out],
// the actor's L_0 layers first, then the critic's L_1 (L_1 = 0 with one network). W is
// (fan_in, fan_out) and b (fan_out,), C-contiguous, of the kernel's type (gpu.py makes sure).
// Launch: grid = n_nets * B blocks (block b: network b / B, row b % B), any number of threads
// (they stride over a layer's outputs), 2 * width * sizeof(real) bytes of dynamic shared memory,
// width >= obs_dim and every hidden size.
//
// Outputs: network 0 writes y0[row, 0:fan_out] (row stride ld0), network 1 writes y1[row, :]
// (row stride its fan_out). With n_log_std > 0, network 0's block also writes
// clip(log_std, lo, hi) into y0[row, ld0 - n_log_std:], so y0 is the Gaussian's dist params
// [mean, log_std]. The clip lets NaN through, as numpy's clip does.

extern __shared__ double minippo_smem[];  // (double: aligned for float and double rows alike)

__device__ inline float act_tanh(float x) { return tanhf(x); }
__device__ inline double act_tanh(double x) { return tanh(x); }

template <typename real>
__device__ void act_forward_impl(const long long* __restrict__ table, int n_nets, int width,
                                 const real* __restrict__ x, int B, int obs_dim, int relu,
                                 real* __restrict__ y0, int ld0, real* __restrict__ y1,
                                 const real* __restrict__ log_std, int n_log_std, real lo, real hi) {
    real* h = reinterpret_cast<real*>(minippo_smem);  // this layer's input
    real* o = h + width;                               // its output, the next layer's input
    const int net = blockIdx.x / B, row = blockIdx.x % B;
    if (net >= n_nets) return;  // (never: the grid is n_nets * B blocks; no block skips a barrier)
    const int L = (int)table[net];
    const long long* rec = table + 2 + (net == 0 ? 0 : 4 * table[0]);
    for (int k = threadIdx.x; k < obs_dim; k += blockDim.x) {
        h[k] = x[(long long)row * obs_dim + k];
    }
    if (net == 0) {
        for (int k = threadIdx.x; k < n_log_std; k += blockDim.x) {
            const real s = log_std[k];
            y0[(long long)row * ld0 + (ld0 - n_log_std) + k] = s < lo ? lo : (s > hi ? hi : s);
        }
    }
    __syncthreads();
    for (int l = 0; l < L; ++l) {
        const real* W = reinterpret_cast<const real*>(rec[4 * l]);
        const real* b = reinterpret_cast<const real*>(rec[4 * l + 1]);
        const int n_in = (int)rec[4 * l + 2], n_out = (int)rec[4 * l + 3];
        const bool last = l == L - 1;
        real* dst = !last ? o : (net == 0 ? y0 + (long long)row * ld0 : y1 + (long long)row * n_out);
        for (int j = threadIdx.x; j < n_out; j += blockDim.x) {
            real s = b[j];
            for (int k = 0; k < n_in; ++k) {
                s = s + h[k] * W[(long long)k * n_out + j];
            }
            if (!last) {
                s = relu ? (s < (real)0 ? (real)0 : s) : act_tanh(s);  // (relu keeps a NaN, as np.maximum)
            }
            dst[j] = s;
        }
        __syncthreads();  // every output written before any thread reads it, or overwrites h
        real* t = h;
        h = o;
        o = t;
    }
}

extern "C" __global__ void act_forward_f32(const long long* table, int n_nets, int width, const float* x, int B,
                                           int obs_dim, int relu, float* y0, int ld0, float* y1,
                                           const float* log_std, int n_log_std, float lo, float hi) {
    act_forward_impl<float>(table, n_nets, width, x, B, obs_dim, relu, y0, ld0, y1, log_std, n_log_std, lo, hi);
}

extern "C" __global__ void act_forward_f64(const long long* table, int n_nets, int width, const double* x, int B,
                                           int obs_dim, int relu, double* y0, int ld0, double* y1,
                                           const double* log_std, int n_log_std, double lo, double hi) {
    act_forward_impl<double>(table, n_nets, width, x, B, obs_dim, relu, y0, ld0, y1, log_std, n_log_std, lo, hi);
}
