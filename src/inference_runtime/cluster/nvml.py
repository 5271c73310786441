"""The GPUs of this machine through NVML (``libnvidia-ml``), read with ctypes: no dependency.

No driver, no library or no GPU all mean the same thing here: an empty list (a CPU-only node).
"""

from __future__ import annotations

import ctypes
import logging

from inference_runtime.cluster.inventory import GpuInfo

log = logging.getLogger("inference_runtime.cluster")
_MIB = 1024 * 1024


class _Memory(ctypes.Structure):
    _fields_ = [
        ("total", ctypes.c_ulonglong),
        ("free", ctypes.c_ulonglong),
        ("used", ctypes.c_ulonglong),
    ]


def _library() -> ctypes.CDLL | None:
    for name in ("libnvidia-ml.so.1", "libnvidia-ml.so", "nvml.dll"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def probe_gpus() -> list[GpuInfo]:
    nvml = _library()
    if nvml is None:
        return []
    if nvml.nvmlInit_v2() != 0:
        log.info("NVML is present but does not initialise: no GPU used")
        return []
    try:
        count = ctypes.c_uint(0)
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return []
        gpus = []
        for index in range(count.value):
            handle = ctypes.c_void_p()
            if nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0:
                continue
            name = ctypes.create_string_buffer(96)
            nvml.nvmlDeviceGetName(handle, name, ctypes.c_uint(96))
            memory = _Memory()
            if nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != 0:
                continue
            gpus.append(
                GpuInfo(
                    index=index,
                    name=name.value.decode(errors="replace"),
                    memory_total_mib=memory.total // _MIB,
                    memory_free_mib=memory.free // _MIB,
                )
            )
        return gpus
    finally:
        nvml.nvmlShutdown()
