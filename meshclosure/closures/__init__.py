"""From a network to a running closure: features, normalization, the closure adapter.

* :class:`FeaturePipeline`: a model's inputs from a coarse state (one code path
  for the dataset writer and the online closure).
* :class:`Normalizer`: the training-split statistics, as a module that travels
  with the model.
* :class:`ModelClosure`: a network as a closure in physical units (mean or
  sampled), and :class:`Closure` with sums and multiples of closures.
* :class:`TendencyClosure` and :func:`with_tendency`: a cell-tendency network
  (``nodewise``, not conservative) added to a solver model's right-hand side.
"""
from .adapter import (Closure, FunctionClosure, ModelClosure, ScaledClosure, SumClosure,
                      as_closure)
from .features import FeaturePipeline
from .normalize import Normalizer
from .tendency import TendencyClosure, TendencyModel, with_tendency

__all__ = ["FeaturePipeline", "Normalizer", "Closure", "FunctionClosure", "SumClosure",
           "ScaledClosure", "ModelClosure", "as_closure", "TendencyClosure", "TendencyModel",
           "with_tendency"]
