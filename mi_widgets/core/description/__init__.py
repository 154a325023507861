"""Description: what a component does. Attribution (:mod:`.attribution`), logit and tuned lens
(:mod:`.lens`), attention patterns (:mod:`.attention`), patchscopes (:mod:`.patchscopes`),
steering (:mod:`.steering`) and chain-of-thought faithfulness (:mod:`.cot`)."""
