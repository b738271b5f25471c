// Ends the Metal-syntax region of a translation unit: removes the address-space and function
// qualifier macros of metal_stdlib, so host code after the kernels can use std::thread & co.
#undef kernel
#undef device
#undef constant
#undef thread
#undef threadgroup
