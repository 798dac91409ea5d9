"""On-device few-shot keyword spotting: numpy + a TFLite interpreter, never TensorFlow."""

from device.detector import Detection, DetectorSettings, StreamingDetector
from device.encoder import Encoder
from device.spotter import Spotter

__all__ = ["Detection", "DetectorSettings", "Encoder", "Spotter", "StreamingDetector"]
