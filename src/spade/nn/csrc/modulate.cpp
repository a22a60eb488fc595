// Fused SPADE modulation for inference on the CPU (see spade/nn/kernels.py):
//   out[p, c] = (x[p, c] - mean[c]) * rows[r(p), c] + rows[r(p), C + c]
// x and out channels-last (pixel-major), rows (R x 2C) the per-class and boundary [s | t] rows,
// r(p) = pixel_row[p]. One read of x, one write of out, the rows from cache: PyTorch would first
// spread the rows over the pixels (N·H·W x 2C written and read again) and then modulate.
// With negative_slope, the leaky ReLU that follows the layer in a residual block (Fig. 4) is
// applied in the same pass, as PyTorch's leaky_relu computes it (v > 0 ? v : v * slope).
#include <torch/extension.h>
#include <ATen/Parallel.h>

torch::Tensor modulate(torch::Tensor x, torch::Tensor rows, torch::Tensor pixel_row,
                       c10::optional<torch::Tensor> mean, c10::optional<double> negative_slope) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && !x.is_cuda(), "x: CPU float32 NCHW");
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), "x must be channels-last");
  TORCH_CHECK(rows.is_contiguous() && rows.scalar_type() == torch::kFloat, "rows: contiguous float32");
  TORCH_CHECK(pixel_row.is_contiguous() && pixel_row.scalar_type() == torch::kLong, "pixel_row: int64");
  const int64_t channels = x.size(1);
  const int64_t pixels = x.size(0) * x.size(2) * x.size(3);
  TORCH_CHECK(rows.size(1) == 2 * channels && pixel_row.numel() == pixels, "shape mismatch");
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
      const float* xr = xs + p * channels;
      const float* scale = table + index[p] * 2 * channels;
      const float* shift = scale + channels;
      float* o = os + p * channels;
      if (mu) {
        for (int64_t c = 0; c < channels; ++c) o[c] = (xr[c] - mu[c]) * scale[c] + shift[c];
      } else {
        for (int64_t c = 0; c < channels; ++c) o[c] = xr[c] * scale[c] + shift[c];
      }
      if (activate) {
        for (int64_t c = 0; c < channels; ++c) o[c] = o[c] > 0.f ? o[c] : o[c] * slope;
      }
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("modulate", &modulate, "fused SPADE modulation (CPU, channels-last)");
}
