"""NNI's floor for bench/first_result.py: a trial that reports one intermediate and one final result at once."""

import nni

params = nni.get_next_parameter()
nni.report_intermediate_result({"default": 50.0})
nni.report_final_result({"default": 50.0, "arch": params.get("arch")})
