"""Recurrent models and their data: plain nn.Modules, the LightningModules that train them,
the typed train spec, datasets, and the data description that travels with a model.

The bottom layer: imports none of rnntune's other packages (README, "Layout").
"""
