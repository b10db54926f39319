"""Mutual Information Gap (Chen et al., 2018), as disentanglement_lib computes it.

Per source: (largest - second largest) mutual information with any latent, divided by the
source's entropy; MIG is the mean over sources. Latents are discretized into equal-width
histogram bins, MI is the plug-in estimate in nats. numpy only (via metrics.common).
"""
import numpy as np

from metrics.common import check_num_bins, check_pair, discretized_mutual_info


def mig(sources, latents, *, num_bins=20):
    """MIG of latents (N, d) about integer sources (N, K); a float in [0, 1].

    Degenerate cases (disentanglement_lib: NaN or an IndexError): a source with a single value has
    entropy 0 and contributes a gap of 0 (so MIG equals InfoMEC's `infoc_gap` with
    estimator='histogram'); with one latent the second-largest MI is taken as 0; constant latents
    carry no information.
    """
    sources, latents = check_pair(sources, latents)
    mi, h_source = discretized_mutual_info(sources, latents, check_num_bins(num_bins))
    ordered = -np.sort(-mi, axis=1)
    second = ordered[:, 1] if mi.shape[1] > 1 else 0.0
    gaps = np.divide(ordered[:, 0] - second, h_source, out=np.zeros(len(h_source)), where=h_source > 0)
    return float(np.mean(gaps))
