from .backbone import BackboneCfg, ESpikeFormer, count_parameters
from .calibrate import calibrate_batchnorm
from .neuron import NILIF, SpikeRecorder, record_spikes
from .spikevimformer import VARIANTS, ModelOutput, SpikeViMFormer, build_model, variant_cfg

__all__ = [
    "BackboneCfg", "ESpikeFormer", "NILIF", "ModelOutput", "SpikeRecorder", "SpikeViMFormer", "VARIANTS",
    "build_model", "calibrate_batchnorm", "count_parameters", "record_spikes", "variant_cfg",
]
