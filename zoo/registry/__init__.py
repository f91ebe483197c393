"""The registries a recipe is checked against: data set names (`datasets`) and model builders
(`models`). Plain Python at the bottom of the package, beside the recipe schema: they import no
runtime module of the zoo, and load the builders by name when first asked."""
