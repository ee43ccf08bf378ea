"""Pure nn.Modules (no file or network I/O): StyleGAN2, the e4e/pSp encoders, their composition."""
