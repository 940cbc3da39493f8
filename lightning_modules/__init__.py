"""Recurrent models (plain nn.Modules), their LightningModules, and datasets."""
