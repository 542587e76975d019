"""Export one arch of a trained supernet as a standalone network for deployment.

`subnet` builds the fixed-arch network (only that arch's branches, no switch), `weights` copies its
weights from the supernet, `formats` writes the SavedModel and TFLite files, `parity` measures how
closely each file agrees with the supernet, `vela` compiles the int8 model for an Arm Ethos-U NPU, and
`export` ties them together. Importing the package loads no TensorFlow; the modules do.
"""
