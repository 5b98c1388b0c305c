// Adam over all of a network's parameter arrays in two launches (a "multi-array" step).
//
// minippo.optim.Adam keeps its moments m, v and a scratch gradient g as flat vectors: parameter
// array k occupies [offsets[k], offsets[k + 1]) of each. Done with array operations a step is ~40
// device operations on a 64-64 actor-critic (12 copies into g, 12 for the moments and the step,
// 12 parameter updates, the clip); each costs a launch and some 10 us of host time, while the
// arithmetic is a few thousand elements. Here it is two kernels:
//
//   adam_gather_*:  g[offsets[k] + j] = grads_k[j]            (then the host takes g's norm)
//   adam_update_*:  g_i   = g_i * scale                        (the clip; scale = 1 when none)
//                   m_i   = m_i * b1 + (1 - b1) * g_i
//                   v_i   = v_i * b2 + (1 - b2) * (g_i * g_i)
//                   theta = theta - (m_i / (sqrt(v_i / c2) + eps)) * (lr / c1)
//
// with c1 = 1 - b1^t, c2 = 1 - b2^t (bias corrections). The scalars arrive rounded once to the
// kernel's type on the host, and each line performs Adam.step's numpy operations in their order and
// dtype; gpu.py compiles with --fmad=false (no a * b + c contracted into an FMA), and CUDA's / and
// sqrt are correctly rounded by default, so the results match numpy bit for bit.
//
// table (2n + 1 long longs): the arrays' addresses, then the n + 1 offsets. The arrays are
// C-contiguous and of the kernel's type (gpu.py makes sure). Launch: grid = n * blocks_per_array,
// block = (block, 1, 1); block b serves array b / blocks_per_array, and that array's blocks stride
// over it, so one launch covers arrays of any sizes.

__device__ inline float root(float x) { return sqrtf(x); }
__device__ inline double root(double x) { return sqrt(x); }

template <typename real>
__device__ void adam_gather_impl(const long long* __restrict__ table, int n, int blocks_per_array,
                                 real* __restrict__ g) {
    const int k = blockIdx.x / blocks_per_array;
    const real* src = reinterpret_cast<const real*>(table[k]);
    const long long begin = table[n + k], size = table[n + k + 1] - begin;
    const long long stride = (long long)blocks_per_array * blockDim.x;
    for (long long j = (long long)(blockIdx.x % blocks_per_array) * blockDim.x + threadIdx.x; j < size; j += stride) {
        g[begin + j] = src[j];
    }
}

template <typename real>
__device__ void adam_update_impl(const long long* __restrict__ table, int n, int blocks_per_array,
                                 const real* __restrict__ g, real* __restrict__ m, real* __restrict__ v,
                                 real scale, real b1, real one_minus_b1, real b2, real one_minus_b2,
                                 real c2, real eps, real lr_c1) {
    const int k = blockIdx.x / blocks_per_array;
    real* theta = reinterpret_cast<real*>(table[k]);
    const long long begin = table[n + k], size = table[n + k + 1] - begin;
    const long long stride = (long long)blocks_per_array * blockDim.x;
    for (long long j = (long long)(blockIdx.x % blocks_per_array) * blockDim.x + threadIdx.x; j < size; j += stride) {
        const long long i = begin + j;
        const real gi = g[i] * scale;
        const real mi = m[i] * b1 + one_minus_b1 * gi;
        const real vi = v[i] * b2 + one_minus_b2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        const real denom = root(vi / c2) + eps;
        theta[j] = theta[j] - (mi / denom) * lr_c1;
    }
}

extern "C" __global__ void adam_gather_f32(const long long* table, int n, int blocks_per_array, float* g) {
    adam_gather_impl<float>(table, n, blocks_per_array, g);
}

extern "C" __global__ void adam_gather_f64(const long long* table, int n, int blocks_per_array, double* g) {
    adam_gather_impl<double>(table, n, blocks_per_array, g);
}

extern "C" __global__ void adam_update_f32(const long long* table, int n, int blocks_per_array, const float* g,
                                           float* m, float* v, float scale, float b1, float one_minus_b1,
                                           float b2, float one_minus_b2, float c2, float eps, float lr_c1) {
    adam_update_impl<float>(table, n, blocks_per_array, g, m, v, scale, b1, one_minus_b1, b2, one_minus_b2, c2,
                            eps, lr_c1);
}

extern "C" __global__ void adam_update_f64(const long long* table, int n, int blocks_per_array, const double* g,
                                           double* m, double* v, double scale, double b1, double one_minus_b1,
                                           double b2, double one_minus_b2, double c2, double eps, double lr_c1) {
    adam_update_impl<double>(table, n, blocks_per_array, g, m, v, scale, b1, one_minus_b1, b2, one_minus_b2, c2,
                             eps, lr_c1);
}
