"""torch_npu.utils, simulated: only what importing torch_npu uses to set torch.version.cann."""
