"""Earlier implementations the benchmarks measure the platform against."""
