"""Front ends over the core: the ``hdi`` command line, the IPython magics, the ipywidgets and what they
share (display, charts, progress, SQL parameters, the demo). Nothing else in hdi_lab imports this."""
