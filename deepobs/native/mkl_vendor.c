/* MKL's answer to "is this an Intel CPU?" (deepobs/mkl_paths.py): yes. Loaded into the process's global
   symbol scope before torch, this definition takes precedence over the one MKL links into libtorch_cpu.so.
   MKL then picks among its code paths by the CPU's instruction sets alone. */
int mkl_serv_intel_cpu_true(void) { return 1; }
