"""raylife_dev: developer tooling outside the runtime package: benchmarks, studies, rehearsals,
manifest checks, the load test and its bare baseline, synthetic tables; installed by `make install`
(the dev extra), never in the wheel or the image."""
