"""Model zoo: cards beside the weights, listing every model opsef can find, and scoring them on labelled data."""
