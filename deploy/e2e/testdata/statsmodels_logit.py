"""Oracle for the federated logistic regression: statsmodels' GLM (binomial, logit link) on
the pooled rows. Reads a CSV of complete cases (outcome y, one column per predictor) and a
JSON spec of the predictors' levels (reference first); prints JSON {term: [coef, se]} with
the design's columns named as Samsyn names its terms."""
import json
import sys

import numpy as np
import pandas as pd
import statsmodels.api as sm

rows = pd.read_csv(sys.argv[1], dtype=str, keep_default_na=False)
spec = json.loads(open(sys.argv[2]).read())
cols = {"(intercept)": np.ones(len(rows))}
for p in spec:
    for level in p["levels"][1:]:
        cols[p["name"] + "=" + level] = (rows[p["name"]] == level).astype(float).to_numpy()
X = pd.DataFrame(cols)
y = rows["y"].astype(float).to_numpy()
fit = sm.GLM(y, X, family=sm.families.Binomial()).fit(tol=1e-14, maxiter=200)
print(json.dumps({t: [float(fit.params[t]), float(fit.bse[t])] for t in X.columns}))
