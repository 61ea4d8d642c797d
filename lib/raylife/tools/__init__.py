"""Developer and operator tools: quality, studies, load test, GPU check, the benchmark."""
