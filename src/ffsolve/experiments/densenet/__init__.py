"""DenseNet inference by Jacobi iteration over its dense layers (reference §2.2): the model
(model.py), the triangular system and its solvers (system.py), inputs (data.py), top-k statistics
(stats.py), the train and measure jobs (experiment.py) and the figure (plots.py)."""
