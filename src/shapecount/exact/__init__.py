"""Exact decoding of GSN images under the generator's rules (see `shapecount.synth`).

`geometry` (every shape placement as a pixel bitset), `search` (every set of shapes of one type pair whose XOR
is the image), `posterior` (the exact likelihood of each class), `decoder` (`Decoder.decode`: feasible classes,
a witness each, the posterior), `audit` (a whole split in parallel, cached: `shapecount audit`) and `solve`
(single PNGs: `shapecount solve`).
"""

from shapecount.exact.decoder import Decoder, Decoding, Shape

__all__ = ["Decoder", "Decoding", "Shape"]
