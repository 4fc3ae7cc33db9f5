//===- RolesTest.cpp - the dialect's roles and the runtime's --------------===//
//
// The runtime cannot include the dialect, so the ABI spells the parameter
// and output roles out again (runtime/abi/Abi.h); both lists must name the
// same roles in the same order.
//
//===----------------------------------------------------------------------===//
#include "ir/DSV3/DSV3Dialect.h"
#include "runtime/abi/Abi.h"

#include <gtest/gtest.h>

TEST(ParamRoles, RuntimeListMatchesTheDialect) {
  std::vector<std::string> dialect;
  for (uint32_t i = 0; auto role = dsv3::symbolizeParamRole(i); ++i)
    dialect.push_back(dsv3::stringifyParamRole(*role).str());
  EXPECT_EQ(dialect, dsv3::rt::paramRoles());
  EXPECT_GT(dialect.size(), 5u);
}

TEST(OutputRoles, RuntimeListMatchesTheDialect) {
  std::vector<std::string> dialect;
  for (uint32_t i = 0; auto role = dsv3::symbolizeOutputRole(i); ++i)
    dialect.push_back(dsv3::stringifyOutputRole(*role).str());
  EXPECT_EQ(dialect, dsv3::rt::outputRoles());
  EXPECT_GT(dialect.size(), 5u);
}
