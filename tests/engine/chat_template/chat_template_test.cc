#include <gtest/gtest.h>
TEST(Placeholder, A) {}
