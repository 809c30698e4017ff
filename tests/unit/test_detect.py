"""The tags a worker finds for itself."""
from __future__ import annotations

import subprocess

from twisted.trial.unittest import SynchronousTestCase

from titan.worker.detect import detected_tags, gpu_count, memory_gb

LISTING = ("GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1)\n"
           "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-2)\n")


class DetectTests(SynchronousTestCase):
    def test_gpus_from_nvidia_smi(self):
        def run(cmd, **kw):
            self.assertEqual(cmd, ["/usr/bin/nvidia-smi", "-L"])
            return subprocess.CompletedProcess(cmd, 0, LISTING, "")
        self.assertEqual(gpu_count(run, lambda name: "/usr/bin/nvidia-smi"), 2)

    def test_no_tool_or_a_failing_tool_means_no_gpu(self):
        self.assertEqual(gpu_count(which=lambda name: None), 0)
        failing = lambda cmd, **kw: subprocess.CompletedProcess(cmd, 9, "", "no devices")
        self.assertEqual(gpu_count(failing, lambda name: "/x/nvidia-smi"), 0)

    def test_tags(self):
        self.assertEqual(detected_tags(64, gpus=1, memory=128), {"GPU", "HIGH_MEM"})
        self.assertEqual(detected_tags(64, gpus=0, memory=16), set())

    def test_this_machine_memory(self):
        self.assertGreater(memory_gb(), 0.1)
