"""Exact likelihood of an image under the generator, from the solution sets the search found.

The generator draws n anchors of a type i.i.d. uniform over N positions; the image shows only the anchors drawn
an odd number of times (XOR). The number of length-n anchor sequences whose odd-multiplicity set is one given
set of size s is

    F(n, s) = n! [x^n] sinh(x)^s cosh(x)^(N - s)

(exponential generating functions: each of the s anchors appears an odd number of times, every other anchor an
even number). So P(image | class (a, b, n_a)) = sum over solution sets (S_a, S_b) of
F(n_a, |S_a|) F(n_b, |S_b|) / N^10, and with the generator's uniform class prior the posterior over classes is
these weights normalised. All arithmetic is on exact integers and fractions.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache
from math import factorial


def _mul(p: list[Fraction], q: list[Fraction], deg: int) -> list[Fraction]:
    out = [Fraction(0)] * (deg + 1)
    for i, a in enumerate(p):
        if a:
            for j in range(min(len(q), deg + 1 - i)):
                out[i + j] += a * q[j]
    return out


def _pow(p: list[Fraction], e: int, deg: int) -> list[Fraction]:
    out = [Fraction(1)] + [Fraction(0)] * deg
    while e:
        if e & 1:
            out = _mul(out, p, deg)
        p = _mul(p, p, deg)
        e >>= 1
    return out


@cache
def odd_set_sequences(n: int, s: int, anchors: int) -> int:
    """F(n, s): length-n sequences over `anchors` symbols whose odd-multiplicity set is a given s-set."""
    if s > n or (n - s) % 2 or s > anchors:
        return 0
    sinh = [Fraction(1, factorial(k)) if k % 2 else Fraction(0) for k in range(n + 1)]
    cosh = [Fraction(0) if k % 2 else Fraction(1, factorial(k)) for k in range(n + 1)]
    series = _mul(_pow(sinh, s, n), _pow(cosh, anchors - s, n), n)
    value = series[n] * factorial(n)
    assert value.denominator == 1
    return int(value)


def class_weight(hist, n_a: int, n_b: int, anchors: int) -> int:
    """Unnormalised likelihood of a class from the solution tally hist[sa][sb] of its type pair."""
    total = 0
    for sa in range(min(n_a, len(hist) - 1) + 1):
        fa = odd_set_sequences(n_a, sa, anchors)
        if not fa:
            continue
        row = hist[sa]
        for sb in range(min(n_b, len(row) - 1) + 1):
            if row[sb]:
                total += int(row[sb]) * fa * odd_set_sequences(n_b, sb, anchors)
    return total
