"""How many classes: information criteria and classification statistics per K, the bootstrap
likelihood-ratio test (BLRT) and the Vuong-Lo-Mendell-Rubin test of K-1 against K classes.

It sits between estimation and inference (data -> models -> estimation -> selection ->
inference -> output): it takes fitted models and their data, and knows nothing of files or
progress tracking (long loops take a Checkpointer and an executor, like the bootstrap).

    criteria.py   AIC, BIC, SABIC, CAIC, ICL, relative entropy, smallest class
    blrt.py       parametric bootstrap of K-1 against K classes
    vlmr.py       Vuong-Lo-Mendell-Rubin and its adjusted (LMR) version
"""
