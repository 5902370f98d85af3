//! What libtorch this binary runs on, and whether it sees a GPU.

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct TorchInfo {
    pub cuda_available: bool,
    pub cudnn_available: bool,
    pub cuda_devices: i64,
    pub threads: i32,
    /// The device training will use by default.
    pub device: String,
}

pub fn torch_info() -> TorchInfo {
    let cuda_available = tch::Cuda::is_available();
    TorchInfo {
        cuda_available,
        cudnn_available: tch::Cuda::cudnn_is_available(),
        cuda_devices: tch::Cuda::device_count(),
        threads: tch::get_num_threads(),
        device: if cuda_available { "cuda:0".into() } else { "cpu".into() },
    }
}

/// A small tensor computation on the default device, proving libtorch actually runs.
pub fn smoke_test() -> anyhow::Result<f64> {
    let device = tch::Device::cuda_if_available();
    let a = tch::Tensor::arange(6, (tch::Kind::Float, device)).reshape([2, 3]);
    let b = a.matmul(&a.transpose(0, 1));
    Ok(b.sum(tch::Kind::Double).double_value(&[]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn libtorch_computes() {
        // [[0,1,2],[3,4,5]] @ its transpose = [[5,14],[14,50]] -> sum 83
        assert_eq!(super::smoke_test().unwrap(), 83.0);
        let info = super::torch_info();
        assert_eq!(info.cuda_available, info.device.starts_with("cuda"));
    }
}
