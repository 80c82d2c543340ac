"""kernelize: binding Hub kernel layers onto a model's modules.

    layers.py        Mode, LayerRepository, use_kernel_forward_from_hub, the rules a layer must keep
    mapping.py       which repository serves a layer name, per device, capability range and mode
    known_layers.py  which kernel layer a module class is (its mark, or transformers' own)
    classes.py       the classes kernelize makes: a module's class with a kernel's forward (copy, pickle)
    functions.py     a stock class's forward run with a kernel in place of a module-level function it calls
    kernelize.py     kernelize: one plan per class, validated before binding, the report
    trust.py         which orgs implicit (library-offered) mappings may load from

The function ``kernelhook.kernelize`` lives in kernelize.py; this package's
name differs from it so that importing the package never hides the function.
"""
