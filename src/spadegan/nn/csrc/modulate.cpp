// Fused SPADE modulation on the CPU (see spadegan/nn/kernels.py):
//   out[p, c] = (x[p, c] - mean[c]) * rows[r(p), c] + rows[r(p), C + c]
// rows (R x 2C) are the per-class and boundary [s | t] rows, r(p) = pixel_row[p]. One read of x,
// one write of out, the rows from cache: PyTorch would first spread the rows over the pixels
// (N·H·W x 2C written and read again) and then modulate. With negative_slope, the leaky ReLU that
// follows the layer in a residual block (Fig. 4) is applied in the same pass, as PyTorch's
// leaky_relu computes it (v > 0 ? v : v * slope).
// Inference runs channels-last (modulate, modulate_pair); training runs channel-major, one
// (image, channel) plane at a time, with its backward pass (modulate_planes, ..._backward).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

// The pixel loop is compiled for AVX2 and for the baseline, chosen at run time where the
// compiler and loader support it (GCC/Clang on x86-64 Linux), so a build runs on any x86-64 CPU.
#if defined(__x86_64__) && defined(__linux__) && (defined(__clang__) || defined(__GNUC__))
#define SPADE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SPADE_CLONES
#endif

// One pixel's channels. The activation is written branch-free so that the loop vectorizes (a
// branch on the sign mispredicts half the time): for v > 0, v + slope·0 = v; otherwise
// 0 + slope·v = slope·v; both exact, so it equals leaky_relu bit for bit (signed zeros too).
SPADE_CLONES
static void modulate_pixel(const float* __restrict__ x, const float* __restrict__ scale,
                           const float* __restrict__ shift, const float* __restrict__ mu,
                           float* __restrict__ out, int64_t channels, bool activate, float slope) {
  if (mu) {
    if (activate) {
      for (int64_t c = 0; c < channels; ++c) {
        const float v = (x[c] - mu[c]) * scale[c] + shift[c];
        out[c] = std::max(v, 0.f) + slope * std::min(v, 0.f);
      }
    } else {
      for (int64_t c = 0; c < channels; ++c) out[c] = (x[c] - mu[c]) * scale[c] + shift[c];
    }
  } else {
    if (activate) {
      for (int64_t c = 0; c < channels; ++c) {
        const float v = x[c] * scale[c] + shift[c];
        out[c] = std::max(v, 0.f) + slope * std::min(v, 0.f);
      }
    } else {
      for (int64_t c = 0; c < channels; ++c) out[c] = x[c] * scale[c] + shift[c];
    }
  }
}

// extra_rows (optional): rows R, R+1, ... of the table kept in a second tensor (the boundary rows
// as the embedding sum returns them), so that they need not be copied behind the class rows.
torch::Tensor modulate(torch::Tensor x, torch::Tensor rows, torch::Tensor pixel_row,
                       c10::optional<torch::Tensor> mean, c10::optional<double> negative_slope,
                       c10::optional<torch::Tensor> extra_rows) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && !x.is_cuda(), "x: CPU float32 NCHW");
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), "x must be channels-last");
  TORCH_CHECK(rows.is_contiguous() && rows.scalar_type() == torch::kFloat, "rows: contiguous float32");
  TORCH_CHECK(pixel_row.is_contiguous() && pixel_row.scalar_type() == torch::kLong, "pixel_row: int64");
  const int64_t channels = x.size(1);
  const int64_t pixels = x.size(0) * x.size(2) * x.size(3);
  TORCH_CHECK(rows.size(1) == 2 * channels && pixel_row.numel() == pixels, "shape mismatch");
  const int64_t first_rows = rows.size(0);
  const float* extra = nullptr;
  torch::Tensor extra_c;
  if (extra_rows.has_value()) {
    extra_c = extra_rows->contiguous();
    TORCH_CHECK(extra_c.scalar_type() == torch::kFloat && extra_c.size(1) == 2 * channels, "extra_rows: R' x 2C float32");
    extra = extra_c.data_ptr<float>();
  }
  auto out = torch::empty_like(x, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const float* xs = x.data_ptr<float>();
  const float* table = rows.data_ptr<float>();
  const int64_t* index = pixel_row.data_ptr<int64_t>();
  const float* mu = nullptr;
  torch::Tensor mean_c;
  if (mean.has_value()) {
    mean_c = mean->contiguous();
    mu = mean_c.data_ptr<float>();
  }
  float* os = out.data_ptr<float>();
  const bool activate = negative_slope.has_value();
  const float slope = activate ? static_cast<float>(*negative_slope) : 0.f;
  at::parallel_for(0, pixels, 64, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t r = index[p];
      const float* scale = r < first_rows ? table + r * 2 * channels : extra + (r - first_rows) * 2 * channels;
      modulate_pixel(xs + p * channels, scale, scale + channels, mu, os + p * channels, channels,
                     activate, slope);
    }
  });
  return out;
}

// One SPADE table of modulate_pair: rows (+ extra rows), an optional mean, an optional slope.
struct Modulation {
  const float* table;
  int64_t first_rows;
  const float* extra;
  const float* mu;
  bool activate;
  float slope;
  torch::Tensor keep_rows, keep_extra, keep_mean;  // hold the contiguous copies alive

  Modulation(const torch::Tensor& rows, const c10::optional<torch::Tensor>& extra_rows,
             const c10::optional<torch::Tensor>& mean, const c10::optional<double>& negative_slope,
             int64_t channels) {
    keep_rows = rows.contiguous();
    TORCH_CHECK(keep_rows.scalar_type() == torch::kFloat && keep_rows.size(1) == 2 * channels, "rows: R x 2C float32");
    table = keep_rows.data_ptr<float>();
    first_rows = keep_rows.size(0);
    extra = nullptr;
    if (extra_rows.has_value()) {
      keep_extra = extra_rows->contiguous();
      TORCH_CHECK(keep_extra.scalar_type() == torch::kFloat && keep_extra.size(1) == 2 * channels, "extra_rows: R' x 2C float32");
      extra = keep_extra.data_ptr<float>();
    }
    mu = nullptr;
    if (mean.has_value()) {
      keep_mean = mean->contiguous();
      TORCH_CHECK(keep_mean.scalar_type() == torch::kFloat && keep_mean.numel() == channels, "mean: C float32");
      mu = keep_mean.data_ptr<float>();
    }
    activate = negative_slope.has_value();
    slope = activate ? static_cast<float>(*negative_slope) : 0.f;
  }

  const float* row(int64_t r, int64_t channels) const {
    return r < first_rows ? table + r * 2 * channels : extra + (r - first_rows) * 2 * channels;
  }
};

// Two SPADE layers on the same input, as a residual block with a learned shortcut has them
// (norm_s and norm_0, Fig. 4), optionally on the input upsampled 2x (nearest, as the generator
// does before each up block): out_a, out_b = modulation a and b of up(x). x is read once (and at
// its own resolution), and up(x) is never written. pixel_row indexes the output resolution.
std::vector<torch::Tensor> modulate_pair(torch::Tensor x, bool upsample, torch::Tensor pixel_row,
                                         torch::Tensor rows_a, c10::optional<torch::Tensor> extra_a,
                                         c10::optional<torch::Tensor> mean_a, c10::optional<double> slope_a,
                                         torch::Tensor rows_b, c10::optional<torch::Tensor> extra_b,
                                         c10::optional<torch::Tensor> mean_b, c10::optional<double> slope_b) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && !x.is_cuda(), "x: CPU float32 NCHW");
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), "x must be channels-last");
  TORCH_CHECK(pixel_row.is_contiguous() && pixel_row.scalar_type() == torch::kLong, "pixel_row: int64");
  const int64_t n = x.size(0), channels = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t factor = upsample ? 2 : 1;
  const int64_t out_h = h * factor, out_w = w * factor;
  TORCH_CHECK(pixel_row.numel() == n * out_h * out_w, "pixel_row: one row per output pixel");
  const Modulation a(rows_a, extra_a, mean_a, slope_a, channels);
  const Modulation b(rows_b, extra_b, mean_b, slope_b, channels);
  auto options = x.options().memory_format(at::MemoryFormat::ChannelsLast);
  auto out_a = torch::empty({n, channels, out_h, out_w}, options);
  auto out_b = torch::empty({n, channels, out_h, out_w}, options);
  const float* xs = x.data_ptr<float>();
  const int64_t* index = pixel_row.data_ptr<int64_t>();
  float* oa = out_a.data_ptr<float>();
  float* ob = out_b.data_ptr<float>();
  // One task per output row: its source row is read from cache for both layers and, when
  // upsampling, for both output pixels of each source pixel.
  at::parallel_for(0, n * out_h, 1, [&](int64_t begin, int64_t end) {
    for (int64_t line = begin; line < end; ++line) {
      const int64_t image = line / out_h, y = line % out_h;
      const float* source_line = xs + ((image * h) + y / factor) * w * channels;
      for (int64_t xo = 0; xo < out_w; ++xo) {
        const int64_t p = line * out_w + xo;
        const float* source = source_line + (xo / factor) * channels;
        const int64_t r = index[p];
        const float* ra = a.row(r, channels);
        const float* rb = b.row(r, channels);
        modulate_pixel(source, ra, ra + channels, a.mu, oa + p * channels, channels, a.activate, a.slope);
        modulate_pixel(source, rb, rb + channels, b.mu, ob + p * channels, channels, b.activate, b.slope);
      }
    }
  });
  return {out_a, out_b};
}

// The channel-major form for training (x contiguous NCHW, the layout the training convs keep):
// one task per (image, channel) plane, which reads the plane's scale and shift from one row each of
// the transposed table rows_t (2C x R: row c the scales of channel c, row C + c its shifts), so the
// R values it looks up stay in cache. out = x * s + t, the product rounded and then the sum
// (PyTorch's addcmul rounds once where ATen uses FMA: the two differ by rounding), then the leaky
// ReLU as PyTorch's leaky_relu computes it.
SPADE_CLONES
static void modulate_plane(const float* __restrict__ x, const float* __restrict__ scale,
                           const float* __restrict__ shift, const int64_t* __restrict__ index,
                           float* __restrict__ out, int64_t pixels, bool activate, float slope) {
  // Runs of pixels that take the same row (a region's interior along a line) share s and t.
  for (int64_t p = 0; p < pixels;) {
    const int64_t row = index[p];
    int64_t end = p + 1;
    while (end < pixels && index[end] == row) ++end;
    const float s = scale[row], t = shift[row];
    if (activate) {
      for (int64_t i = p; i < end; ++i) {
        const float v = x[i] * s + t;
        out[i] = std::max(v, 0.f) + slope * std::min(v, 0.f);
      }
    } else {
      for (int64_t i = p; i < end; ++i) out[i] = x[i] * s + t;
    }
    p = end;
  }
}

// One plane of the backward pass: g = the gradient after the leaky ReLU's backward (kActivate),
// grad_x = g·s (kGradX), and each row's sums of g·x and of g added into sum_scale and sum_shift
// (kSums). A run of pixels with one row is summed as a vectorized reduction, then added to the
// row once: the rows' sums are not a chain of dependent additions through memory, which pixel
// after pixel of one region would make them.
template <bool kActivate, bool kGradX, bool kSums>
SPADE_CLONES
static void modulate_plane_backward(const float* __restrict__ grad, const float* __restrict__ x,
                                    const float* __restrict__ out, const float* __restrict__ scale,
                                    const int64_t* __restrict__ index, float* __restrict__ grad_x,
                                    float* __restrict__ sum_scale, float* __restrict__ sum_shift,
                                    int64_t pixels, float slope) {
  for (int64_t p = 0; p < pixels;) {
    const int64_t row = index[p];
    int64_t end = p + 1;
    while (end < pixels && index[end] == row) ++end;
    const float s = scale[row];
    float run_scale = 0.f, run_shift = 0.f;
#pragma omp simd reduction(+ : run_scale, run_shift)
    for (int64_t i = p; i < end; ++i) {
      float g = grad[i];
      if (kActivate) g = out[i] > 0.f ? g : g * slope;
      if (kGradX) grad_x[i] = g * s;
      if (kSums) {
        run_scale += g * x[i];
        run_shift += g;
      }
    }
    if (kSums) {
      sum_scale[row] += run_scale;
      sum_shift[row] += run_shift;
    }
    p = end;
  }
}

template <bool kActivate>
static void modulate_plane_backward_for(bool grad_x, bool sums, const float* grad, const float* x, const float* out,
                                        const float* scale, const int64_t* index, float* gx, float* sum_scale,
                                        float* sum_shift, int64_t pixels, float slope) {
  if (grad_x && sums) {
    modulate_plane_backward<kActivate, true, true>(grad, x, out, scale, index, gx, sum_scale, sum_shift, pixels, slope);
  } else if (grad_x) {
    modulate_plane_backward<kActivate, true, false>(grad, x, out, scale, index, gx, sum_scale, sum_shift, pixels, slope);
  } else if (sums) {
    modulate_plane_backward<kActivate, false, true>(grad, x, out, scale, index, gx, sum_scale, sum_shift, pixels, slope);
  }
}

static void check_planes(const torch::Tensor& x, const torch::Tensor& rows_t, const torch::Tensor& pixel_row) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && !x.is_cuda() && x.is_contiguous(),
              "x: contiguous CPU float32 NCHW");
  TORCH_CHECK(rows_t.dim() == 2 && rows_t.is_contiguous() && rows_t.scalar_type() == torch::kFloat,
              "rows_t: contiguous float32 (2C or C) x R");
  TORCH_CHECK(pixel_row.is_contiguous() && pixel_row.scalar_type() == torch::kLong &&
              pixel_row.numel() == x.size(0) * x.size(2) * x.size(3), "pixel_row: one int64 per pixel");
}

torch::Tensor modulate_planes(torch::Tensor x, torch::Tensor rows_t, torch::Tensor pixel_row,
                              c10::optional<double> negative_slope) {
  check_planes(x, rows_t, pixel_row);
  const int64_t n = x.size(0), channels = x.size(1), pixels = x.size(2) * x.size(3);
  TORCH_CHECK(rows_t.size(0) == 2 * channels, "rows_t: 2C x R");
  const int64_t num_rows = rows_t.size(1);
  auto out = torch::empty_like(x, at::MemoryFormat::Contiguous);
  const float* xs = x.data_ptr<float>();
  const float* table = rows_t.data_ptr<float>();
  const int64_t* index = pixel_row.data_ptr<int64_t>();
  float* os = out.data_ptr<float>();
  const bool activate = negative_slope.has_value();
  const float slope = activate ? static_cast<float>(*negative_slope) : 0.f;
  at::parallel_for(0, n * channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t image = plane / channels, c = plane % channels;
      modulate_plane(xs + plane * pixels, table + c * num_rows, table + (channels + c) * num_rows,
                     index + image * pixels, os + plane * pixels, pixels, activate, slope);
    }
  });
  return out;
}

// The backward pass of modulate_planes. With g the incoming gradient, after the leaky ReLU's
// backward (g where out > 0, else g * slope, as PyTorch's leaky_relu_backward on the result):
//   grad_x[p] = g[p] * s[r(p)]                       (when need_x)
//   grad_rows_t[c, r] = sum over p with r(p) = r of g[p] * x[p],  grad_rows_t[C + c, r] = ... of g[p]
// (when need_rows). One task per channel, so that no two tasks add into the same row.
std::vector<torch::Tensor> modulate_planes_backward(torch::Tensor grad, torch::Tensor x, torch::Tensor scale_t,
                                                    torch::Tensor pixel_row, c10::optional<torch::Tensor> out,
                                                    c10::optional<double> negative_slope, bool need_x,
                                                    bool need_rows) {
  check_planes(x, scale_t, pixel_row);
  const int64_t n = x.size(0), channels = x.size(1), pixels = x.size(2) * x.size(3);
  TORCH_CHECK(scale_t.size(0) == channels, "scale_t: C x R");
  TORCH_CHECK(grad.sizes() == x.sizes(), "grad: the shape of x");
  TORCH_CHECK(out.has_value() == negative_slope.has_value(), "out and negative_slope come together");
  const int64_t num_rows = scale_t.size(1);
  auto grad_c = grad.contiguous();
  torch::Tensor out_c;
  const float* os = nullptr;
  if (out.has_value()) {
    out_c = out->contiguous();
    TORCH_CHECK(out_c.sizes() == x.sizes() && out_c.scalar_type() == torch::kFloat, "out: the shape of x");
    os = out_c.data_ptr<float>();
  }
  const float slope = negative_slope.has_value() ? static_cast<float>(*negative_slope) : 1.f;
  torch::Tensor grad_x = need_x ? torch::empty_like(x, at::MemoryFormat::Contiguous) : torch::Tensor();
  torch::Tensor grad_rows_t = need_rows ? torch::zeros({2 * channels, num_rows}, x.options()) : torch::Tensor();
  const float* gs = grad_c.data_ptr<float>();
  const float* xs = x.data_ptr<float>();
  const float* table = scale_t.data_ptr<float>();
  const int64_t* index = pixel_row.data_ptr<int64_t>();
  float* gx = need_x ? grad_x.data_ptr<float>() : nullptr;
  float* gr = need_rows ? grad_rows_t.data_ptr<float>() : nullptr;
  at::parallel_for(0, channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const float* scale = table + c * num_rows;
      float* sum_scale = gr ? gr + c * num_rows : nullptr;
      float* sum_shift = gr ? gr + (channels + c) * num_rows : nullptr;
      for (int64_t image = 0; image < n; ++image) {
        const int64_t plane = (image * channels + c) * pixels;
        const auto backward = os ? modulate_plane_backward_for<true> : modulate_plane_backward_for<false>;
        backward(need_x, need_rows, gs + plane, xs + plane, os ? os + plane : nullptr, scale, index + image * pixels,
                 gx ? gx + plane : nullptr, sum_scale, sum_shift, pixels, slope);
      }
    }
  });
  return {grad_x, grad_rows_t};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("modulate", &modulate, "fused SPADE modulation (CPU, channels-last)");
  m.def("modulate_planes", &modulate_planes, "fused SPADE modulation (CPU, channel-major, for training)");
  m.def("modulate_planes_backward", &modulate_planes_backward, "the backward pass of modulate_planes");
  m.def("modulate_pair", &modulate_pair, "two SPADE modulations of one (optionally 2x upsampled) input");
}
