//===- Numerics.h - error measures shared by the numerics tests -*- C++ -*-===//
//
// Header-only helpers for the unit and end-to-end tests that compare
// results with golden data or an independent evaluation.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_TESTS_SUPPORT_NUMERICS_H
#define DSV3_TESTS_SUPPORT_NUMERICS_H

#include <cmath>
#include <vector>

namespace dsv3::test {

/// ||got - want|| / ||want||, accumulated in double precision; NaN (which
/// fails every bound) when the sizes differ.
template <class Got, class Want>
double relativeL2(const std::vector<Got> &got, const std::vector<Want> &want) {
  if (got.size() != want.size())
    return std::nan("");
  double diff = 0, norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double d = double(got[i]) - double(want[i]);
    diff += d * d;
    norm += double(want[i]) * double(want[i]);
  }
  return std::sqrt(diff / norm);
}

} // namespace dsv3::test

#endif // DSV3_TESTS_SUPPORT_NUMERICS_H
