"""The bundled models' machinery: safe loading and cards (`hub`), their networks (`nets`, `judge_nets`,
`mol_nets`), the samplers they run in (`flow`: mnist-flow and mnist-onestep; `masked`: masked diffusion), the
data they were trained on (`data`), the training loop pieces (`training`), sample metrics (`evaluation`) and
small exact toys for tests (`toy`). `rewardsteer.models` is the public face: use it to get a ready model.
"""
