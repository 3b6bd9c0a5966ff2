package config

// JoinBase puts the base model among the models for karcher, which averages
// every input, the base included: appended last unless listed already.
func (c *Config) JoinBase() {
	if c.Method != "karcher" || c.BaseModel == "" {
		return
	}
	for _, m := range c.Models {
		if samePath(m.Path, c.BaseModel) {
			return
		}
	}
	c.Models = append(c.Models, ModelEntry{Path: c.BaseModel, Parameters: Params{}, Line: c.lines.base})
}
