"""Tools around a trained adapter: model cards and Hub uploads, weight-file conversion, folder simulation."""
