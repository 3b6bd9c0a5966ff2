package merge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"sort"

	"github.com/tiesmm/tiesmm/config"
	"github.com/tiesmm/tiesmm/kernels"
	"github.com/tiesmm/tiesmm/mmapio"
)

// VocabOptions is the config's tokenizer_source (or tokenizer: block).
type VocabOptions struct {
	Source    string // "" (none), "base", "union" or a model path
	PadTo     int    // pad_to_multiple_of; 0 or 1: no padding
	BaseModel string // the config's base_model ("" when it has none)
	// Tokens are the tokenizer: block's per-token overrides; their models
	// are matched to the merge's by path.
	Tokens []config.TokenOverride
}

// A tokenizer's vocabulary as tokenizer.json and config.json give it.
type tokenizerFile struct {
	dir     string
	raw     map[string]json.RawMessage // tokenizer.json's top level
	model   map[string]json.RawMessage // its "model"
	unigram bool                       // model.vocab is a list of [piece, score]
	vocab   []vocabEntry               // model.vocab in id order
	added   []addedToken               // added_tokens in id order
	size    int64                      // config.json's vocab_size: the embedding rows
	bytes   int64                      // tokenizer.json's size
}

type vocabEntry struct {
	token string
	id    int64
	score json.RawMessage // Unigram's score, nil otherwise
}

type addedToken struct {
	id      int64
	content string
	fields  map[string]json.RawMessage // the entry as written
}

// readTokenizer reads dir's tokenizer.json and config.json's vocab_size.
func readTokenizer(dir string) (*tokenizerFile, error) {
	path := filepath.Join(dir, "tokenizer.json")
	data, err := mmapio.ReadRegular(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: no tokenizer.json (tokenizer_source needs each model's tokenizer; tokenizer.model alone is not read)", dir)
	}
	if err != nil {
		return nil, err
	}
	tf := &tokenizerFile{dir: dir, bytes: int64(len(data))}
	if err := json.Unmarshal(data, &tf.raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := json.Unmarshal(tf.raw["model"], &tf.model); err != nil || tf.model == nil {
		return nil, fmt.Errorf("%s: no model object", path)
	}
	if err := tf.readVocab(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var added []map[string]json.RawMessage
	if a, ok := tf.raw["added_tokens"]; ok && !bytes.Equal(bytes.TrimSpace(a), []byte("null")) {
		if err := json.Unmarshal(a, &added); err != nil {
			return nil, fmt.Errorf("%s: added_tokens: %w", path, err)
		}
	}
	for i, fields := range added {
		at := addedToken{fields: fields}
		if json.Unmarshal(fields["id"], &at.id) != nil || json.Unmarshal(fields["content"], &at.content) != nil || at.id < 0 {
			return nil, fmt.Errorf("%s: added_tokens[%d]: want an id and a content", path, i)
		}
		tf.added = append(tf.added, at)
	}
	sort.SliceStable(tf.added, func(a, b int) bool { return tf.added[a].id < tf.added[b].id })
	cfg, err := readConfig(dir)
	if err != nil {
		return nil, err
	}
	size, ok := cfg["vocab_size"].(float64)
	if !ok || size < 1 || size != float64(int64(size)) {
		return nil, fmt.Errorf("%s: config.json has no vocab_size (the embedding rows its tokenizer's ids index)", dir)
	}
	tf.size = int64(size)
	return tf, nil
}

// readVocab reads model.vocab: a map of token to id (BPE, WordPiece, WordLevel) or
// Unigram's list of [piece, score], whose ids are the positions.
func (tf *tokenizerFile) readVocab() error {
	raw, ok := tf.model["vocab"]
	if !ok {
		return errors.New("model.vocab is missing")
	}
	var typ string
	_ = json.Unmarshal(tf.model["type"], &typ)
	if typ == "Unigram" {
		var pieces [][]json.RawMessage
		if err := json.Unmarshal(raw, &pieces); err != nil {
			return fmt.Errorf("model.vocab (Unigram): %w", err)
		}
		tf.unigram = true
		for i, p := range pieces {
			e := vocabEntry{id: int64(i)}
			if len(p) != 2 || json.Unmarshal(p[0], &e.token) != nil {
				return fmt.Errorf("model.vocab[%d]: want [piece, score]", i)
			}
			e.score = p[1]
			tf.vocab = append(tf.vocab, e)
		}
		return nil
	}
	var ids map[string]int64
	if err := json.Unmarshal(raw, &ids); err != nil {
		return fmt.Errorf("model.vocab: want a map of token to id (model type %q): %w", typ, err)
	}
	for tok, id := range ids {
		if id < 0 {
			return fmt.Errorf("model.vocab: token %q has id %d", tok, id)
		}
		tf.vocab = append(tf.vocab, vocabEntry{token: tok, id: id})
	}
	sort.Slice(tf.vocab, func(a, b int) bool { return tf.vocab[a].id < tf.vocab[b].id })
	return nil
}

// ids maps every token of the tokenizer (model.vocab and added tokens) to its id;
// with stripped, only those below vocab_size, the tokens the model has a row for.
func (tf *tokenizerFile) ids(stripped bool) map[string]int64 {
	m := make(map[string]int64, len(tf.vocab)+len(tf.added))
	for _, e := range tf.vocab {
		if !stripped || e.id < tf.size {
			m[e.token] = e.id
		}
	}
	for _, a := range tf.added {
		if !stripped || a.id < tf.size {
			m[a.content] = a.id
		}
	}
	return m
}

// vocabMap is the output vocabulary and, per model, the row each output
// token takes from it: the plan's map of embedding rows.
type vocabMap struct {
	tokens []string // output id → token ("" for an id no token has)
	rows   int64    // output rows, pad_to_multiple_of applied
	paths  []string // the models, in config order, the base last unless listed
	perm   [][]int32
	fill   []int32 // per output token without padding: fillZero, fillMean or the model to copy
	base   int     // index of the base model in paths, -1 if the config has none
	out    *tokenizerFile
	// appended are the tokens past the source's, in output id order:
	// ordinary tokens (fields nil) or added tokens (their entry).
	appended []addedToken
	stripped bool // the source's tokens at or past its vocab_size are dropped
	// over holds, per output id a tokens: override applies to, what it
	// sets; listed counts the tokens appended because tokens: lists them
	// (the last of appended).
	over   map[int]tokenRule
	listed int
}

// tokenRule is what a tokens: override sets for an output id: whether every
// model takes its fill (force) or only those lacking the token, and for a
// fillRow token the stored row the fill reads.
type tokenRule struct {
	force bool
	from  modelRow
}

// modelRow is a stored row of model model (an index into vocabMap.paths).
type modelRow struct {
	model int32
	row   int64
}

const (
	fillZero = -1 // no model has the token: zeros
	fillMean = -2 // several models have it, the base not: their float32 mean
	fillRow  = -3 // a tokens: override's model_token: its tokenRule's row
)

// newVocabMap reads every model's tokenizer and builds the output vocabulary
// and the rows of each model: vo.Source's rules, in config order, then
// vo.Tokens' overrides. paths are the models' folders, base the base_model's
// index (-1: none), modelOf the index into paths of a model as the config
// names it (-1: not a model of the merge).
func newVocabMap(vo VocabOptions, paths []string, base int, modelOf func(string) int) (*vocabMap, error) {
	vm := &vocabMap{paths: paths, base: base}
	toks := make([]*tokenizerFile, len(paths))
	for i, path := range paths {
		tf, err := readTokenizer(path)
		if err != nil {
			return nil, fmt.Errorf("tokenizer_source: %w", err)
		}
		toks[i] = tf
	}
	first := vm.base
	if first < 0 {
		first = 0 // no base_model: the first model's tokenizer
	}
	switch vo.Source {
	case "base", "union":
		vm.out, vm.stripped = toks[first], true
	default:
		tf, err := readTokenizer(vo.Source)
		if err != nil {
			return nil, fmt.Errorf("tokenizer_source: %w", err)
		}
		vm.out = tf
	}
	outIDs := vm.out.ids(vm.stripped)
	if vo.Source == "union" {
		vm.union(toks, first, outIDs)
	}
	vm.appendListed(vo.Tokens, outIDs)
	var n int64
	for _, id := range outIDs {
		n = max(n, id+1)
	}
	vm.tokens = make([]string, n)
	for tok, id := range outIDs {
		if other := vm.tokens[id]; other != "" {
			a, b := min(tok, other), max(tok, other)
			return nil, fmt.Errorf("tokenizer_source: %s: tokens %q and %q have the same id %d", vm.out.dir, a, b, id)
		}
		vm.tokens[id] = tok
	}
	vm.rows = n
	if p := int64(vo.PadTo); p > 1 && n%p != 0 {
		vm.rows = (n/p + 1) * p
	}
	vm.perm = make([][]int32, len(paths))
	for k, tf := range toks {
		have := tf.ids(true)
		vm.perm[k] = make([]int32, n)
		for id, tok := range vm.tokens {
			row, ok := have[tok]
			if !ok || tok == "" {
				row = -1
			}
			vm.perm[k][id] = int32(row)
		}
	}
	vm.fill = make([]int32, n)
	for id := range vm.tokens {
		vm.fill[id] = vm.fillOf(id)
	}
	if err := vm.override(vo.Tokens, toks, outIDs, modelOf); err != nil {
		return nil, err
	}
	return vm, nil
}

// appendListed appends to ids, from max id + 1, the tokens tokens: lists
// that the output lacks, in the order listed, as plain added tokens:
// mergekit adds every listed token to its output tokenizer.
func (vm *vocabMap) appendListed(tokens []config.TokenOverride, ids map[string]int64) {
	next := int64(0)
	for _, id := range ids {
		next = max(next, id+1)
	}
	for _, o := range tokens {
		if _, ok := ids[o.Token]; !ok {
			ids[o.Token] = next
			vm.appended = append(vm.appended, addedToken{id: next, content: o.Token})
			vm.listed++
			next++
		}
	}
}

// override applies the tokens: overrides: a token listed takes the row its
// source gives in place of fillOf's, in the models that lack it, or in
// every model with force.
func (vm *vocabMap) override(tokens []config.TokenOverride, toks []*tokenizerFile, outIDs map[string]int64, modelOf func(string) int) error {
	for _, o := range tokens {
		what := fmt.Sprintf("tokenizer.tokens[%q]", o.Token)
		rule := tokenRule{force: o.Force}
		id := int(outIDs[o.Token]) // appendListed added the ones missing
		k := -1
		if o.Source != config.TokenZero {
			if k = modelOf(o.Model); k < 0 {
				return fmt.Errorf("%s: %s is not a model of the merge", what, o.Model)
			}
		}
		switch o.Source {
		case config.TokenZero:
			vm.fill[id] = fillZero
		case config.TokenFromModel:
			if vm.perm[k][id] < 0 {
				return fmt.Errorf("%s: source %s does not have the token (below its vocab_size): use {kind: model_token, model: %s, token: ...} to take another token's row", what, o.Model, o.Model)
			}
			vm.fill[id] = int32(k)
		case config.TokenModelToken:
			row := o.FromID
			if !o.ByID {
				r, ok := toks[k].ids(false)[o.FromToken]
				if !ok {
					return fmt.Errorf("%s: token %q is not in %s's tokenizer", what, o.FromToken, toks[k].dir)
				}
				row = r
			}
			vm.fill[id], rule.from = fillRow, modelRow{int32(k), row}
		}
		if vm.over == nil {
			vm.over = map[int]tokenRule{}
		}
		vm.over[id] = rule
	}
	return nil
}

// keeps reports whether the output tokenizer keeps the source's token id:
// base and union drop the ids at or past its vocab_size.
func (vm *vocabMap) keeps(id int64) bool { return !vm.stripped || id < vm.out.size }

// overIDs are the output ids tokens: overrides apply to, in order.
func (vm *vocabMap) overIDs() []int {
	ids := make([]int, 0, len(vm.over))
	for id := range vm.over {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// own is model k's own row of output id, -1 where it takes the fill.
func (vm *vocabMap) own(k int, id int64) int32 {
	if vm.over[int(id)].force {
		return -1
	}
	return vm.perm[k][id]
}

// union appends to ids, from max id + 1: every model's ordinary tokens the
// output lacks, model by model (the first one first), each in id order; then
// every model's added tokens not yet present, in the same order.
func (vm *vocabMap) union(toks []*tokenizerFile, first int, ids map[string]int64) {
	next := int64(0)
	for _, id := range ids {
		next = max(next, id+1)
	}
	order := append([]int{first}, slices.DeleteFunc(seq(len(toks)), func(i int) bool { return i == first })...)
	add := func(tok string, entry map[string]json.RawMessage) {
		if _, ok := ids[tok]; ok {
			return
		}
		ids[tok] = next
		vm.appended = append(vm.appended, addedToken{id: next, content: tok, fields: entry})
		next++
	}
	for _, k := range order {
		tf := toks[k]
		isAdded := map[string]bool{}
		for _, a := range tf.added {
			isAdded[a.content] = true
		}
		for _, e := range tf.vocab {
			if e.id < tf.size && !isAdded[e.token] {
				add(e.token, nil)
			}
		}
	}
	for _, k := range order {
		for _, a := range toks[k].added {
			if a.id < toks[k].size {
				add(a.content, a.fields)
			}
		}
	}
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// fillOf is the row a model lacking token id takes: the only model that has
// it, else the base if it has it, else the mean of those that have it, else
// zeros.
func (vm *vocabMap) fillOf(id int) int32 {
	holders, only := 0, int32(0)
	for k := range vm.paths {
		if vm.perm[k][id] >= 0 {
			holders++
			only = int32(k)
		}
	}
	switch {
	case holders == 0:
		return fillZero
	case holders == 1:
		return only
	case vm.base >= 0 && vm.perm[vm.base][id] >= 0:
		return int32(vm.base)
	}
	return fillMean
}

// past reports whether the tokenizer has tokens at or past its vocab_size.
func (tf *tokenizerFile) past() bool {
	return slices.ContainsFunc(tf.vocab, func(e vocabEntry) bool { return e.id >= tf.size }) ||
		slices.ContainsFunc(tf.added, func(a addedToken) bool { return a.id >= tf.size })
}

// realRows is the number of output tokens, padding excluded.
func (vm *vocabMap) realRows() int64 { return int64(len(vm.tokens)) }

// bytes is the map's memory: the rows of every model and the fills, the
// output tokens, the source tokenizer kept to be written (its JSON and its
// parsed vocabulary), and the tokens: overrides' entries.
func (vm *vocabMap) bytes() int64 {
	n := int64(len(vm.tokens))
	return n*4*int64(len(vm.paths)+1) + n*32 + 2*vm.out.bytes + int64(len(vm.out.vocab))*48 + int64(len(vm.over))*3*64
}

// readVocab builds the plan's vocabulary map; the models are the merge's
// folders in config order, the base last unless listed.
func (p *Plan) readVocab() error {
	var dirs []string
	index := map[string]int{}
	at := func(md *mmapio.Model) int {
		key := filepath.Clean(md.Dir)
		if k, ok := index[key]; ok {
			return k
		}
		index[key] = len(dirs)
		dirs = append(dirs, md.Dir)
		return len(dirs) - 1
	}
	p.vocabModels = make([]int, len(p.Models))
	for i, md := range p.Models {
		p.vocabModels[i] = at(md)
	}
	p.vocabBase = at(p.Base)
	base := -1
	if p.Opts.Vocab.BaseModel != "" {
		base = p.vocabBase
	}
	modelOf := func(path string) int {
		for _, md := range append([]*mmapio.Model{p.Base}, p.Models...) {
			if filepath.Clean(md.Path) == filepath.Clean(path) || filepath.Clean(md.Dir) == filepath.Clean(path) {
				return index[filepath.Clean(md.Dir)]
			}
		}
		return -1
	}
	vm, err := newVocabMap(p.Opts.Vocab, dirs, base, modelOf)
	if err != nil {
		return err
	}
	p.vocab = vm
	return nil
}

// embedding reports whether a tensor's rows are tokens: an embedding or
// output head of two dimensions.
func (p *Plan) embedding(name string, bt *mmapio.Tensor) bool {
	return vocabTensor(name) && len(bt.Shape) == 2
}

// alignRows lays out an embedding: with a tokenizer_source, one row per
// output token, each model's rows aligned by token; without one, inputs of
// different sizes are cut to their common rows and columns.
func (p *Plan) alignRows(job *Job) error {
	ins := append([]*mmapio.Tensor{job.Base}, job.Models...)
	dts := append([]kernels.DType{job.BaseDT}, job.ModelDT...)
	rows, cols := ins[0].Shape[0], ins[0].Shape[1]
	sameCols, same := true, true
	for _, t := range ins {
		if len(t.Shape) != 2 {
			return fmt.Errorf("tensor %q: shape %s in %s: an embedding has two dimensions", job.Name, shapeString(t.Shape), t.File)
		}
		rows, cols = min(rows, t.Shape[0]), min(cols, t.Shape[1])
		sameCols = sameCols && t.Shape[1] == ins[0].Shape[1]
		same = same && sameCols && t.Shape[0] == ins[0].Shape[0]
	}
	var v *rowView
	switch {
	case p.vocab != nil:
		if !sameCols {
			return fmt.Errorf("tensor %q: %d columns in %s but %d in the base %s: tokenizer_source aligns rows, the columns must match", job.Name, colsOtherThan(ins), fileOtherThan(ins), ins[0].Shape[1], ins[0].File)
		}
		v = &rowView{cols: cols, vm: p.vocab, srcs: make([]*mmapio.Tensor, len(p.vocab.paths)), srcDT: make([]kernels.DType, len(p.vocab.paths))}
		for i, t := range ins {
			k := p.viewModel(v, i-1)
			v.srcs[k], v.srcDT[k] = t, dts[i]
		}
		for k, t := range v.srcs {
			for id, row := range p.vocab.perm[k] {
				if int64(row) >= t.Shape[0] {
					return fmt.Errorf("tensor %q: %s has %d rows, but its tokenizer gives token %q id %d below config.json's vocab_size", job.Name, t.File, t.Shape[0], p.vocab.tokens[id], row)
				}
			}
		}
		for _, id := range p.vocab.overIDs() {
			if fr := p.vocab.over[id].from; p.vocab.fill[id] == fillRow && fr.row >= v.srcs[fr.model].Shape[0] {
				t := v.srcs[fr.model]
				return fmt.Errorf("tensor %q: tokenizer.tokens[%q]: row %d of %s, which has %d rows", job.Name, p.vocab.tokens[id], fr.row, t.File, t.Shape[0])
			}
		}
		rows = p.vocab.rows
	case same:
		return nil
	case sameCols:
		// Every input's first rows, read as they are stored.
		job.Shape, job.Elements = []int64{rows, cols}, rows*cols
		return nil
	default:
		v = &rowView{cols: cols, srcs: ins, srcDT: dts}
	}
	job.Shape, job.Elements, job.Rows = []int64{rows, cols}, rows*cols, v
	job.BaseDT = kernels.F32
	for i := range job.ModelDT {
		job.ModelDT[i] = kernels.F32
	}
	return nil
}

// colsOtherThan and fileOtherThan name the first input whose columns differ
// from the first's.
func colsOtherThan(ins []*mmapio.Tensor) int64 { return ins[otherCols(ins)].Shape[1] }

func fileOtherThan(ins []*mmapio.Tensor) string { return ins[otherCols(ins)].File }

func otherCols(ins []*mmapio.Tensor) int {
	for i, t := range ins {
		if t.Shape[1] != ins[0].Shape[1] {
			return i
		}
	}
	return 0
}

// tokenizerFiles are the files that make up a tokenizer: with a model as
// tokenizer_source they come from that model's folder.
var tokenizerFiles = []string{
	"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
	"vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
}

// tokenizerOutputs are the tokenizer files the output gets, by name: the
// source model's files as they are, or for base and union the base's
// tokenizer.json with the output vocabulary (and tokenizer_config.json's
// added_tokens_decoder to match), unless that is the base's own.
func (vm *vocabMap) tokenizerOutputs(source string) (map[string][]byte, error) {
	out := map[string][]byte{}
	dir := vm.out.dir
	for _, name := range tokenizerFiles {
		data, err := mmapio.ReadRegular(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[name] = data
	}
	model := source != "base" && source != "union"
	if len(vm.appended) == 0 && (model || source == "base" && !vm.out.past()) {
		return out, nil // the tokenizer as it is
	}
	tok, err := vm.tokenizerJSON()
	if err != nil {
		return nil, err
	}
	out["tokenizer.json"] = tok
	if cfg, ok := out["tokenizer_config.json"]; ok {
		if out["tokenizer_config.json"], err = vm.tokenizerConfig(cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "tokenizer_config.json"), err)
		}
	}
	return out, nil
}

// tokenizerJSON is the source's tokenizer.json with the tokens past its
// vocab_size dropped and the appended tokens added as added tokens (ordinary
// ones as plain, not special, added tokens, as transformers' add_tokens
// writes them).
func (vm *vocabMap) tokenizerJSON() ([]byte, error) {
	tf := vm.out
	model := maps(tf.model)
	var vocab []byte
	var err error
	if tf.unigram {
		var pieces [][2]json.RawMessage
		for _, e := range tf.vocab {
			if vm.keeps(e.id) {
				tok, _ := json.Marshal(e.token)
				pieces = append(pieces, [2]json.RawMessage{tok, e.score})
			}
		}
		vocab, err = json.Marshal(pieces)
	} else {
		vocab, err = orderedVocab(tf, vm.keeps)
	}
	if err != nil {
		return nil, err
	}
	model["vocab"] = vocab
	raw := maps(tf.raw)
	if raw["model"], err = json.Marshal(model); err != nil {
		return nil, err
	}
	var added []map[string]json.RawMessage
	for _, a := range tf.added {
		if vm.keeps(a.id) {
			added = append(added, a.fields)
		}
	}
	for _, a := range vm.appended {
		added = append(added, appendedEntry(a))
	}
	if raw["added_tokens"], err = json.Marshal(added); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(raw, "", "  ")
	return append(b, '\n'), err
}

// appendedEntry is the added_tokens entry of an appended token.
func appendedEntry(a addedToken) map[string]json.RawMessage {
	e := map[string]json.RawMessage{}
	if a.fields == nil {
		for _, k := range []string{"single_word", "lstrip", "rstrip", "special"} {
			e[k] = json.RawMessage("false")
		}
		e["normalized"] = json.RawMessage("true")
	} else {
		e = maps(a.fields)
	}
	e["id"], _ = json.Marshal(a.id)
	e["content"], _ = json.Marshal(a.content)
	return e
}

// orderedVocab writes a token → id map in id order, the ids keep keeps.
func orderedVocab(tf *tokenizerFile, keep func(id int64) bool) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	for _, e := range tf.vocab {
		if !keep(e.id) {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		k, err := json.Marshal(e.token)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		fmt.Fprintf(&b, ":%d", e.id)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// tokenizerConfig rewrites tokenizer_config.json's added_tokens_decoder, if
// it has one, to the output's added tokens.
func (vm *vocabMap) tokenizerConfig(data []byte) ([]byte, error) {
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, err
	}
	dec, ok := cfg["added_tokens_decoder"]
	if !ok {
		return data, nil
	}
	var entries map[string]map[string]json.RawMessage
	if err := json.Unmarshal(dec, &entries); err != nil {
		return nil, fmt.Errorf("added_tokens_decoder: %w", err)
	}
	out := map[string]map[string]json.RawMessage{}
	for id, e := range entries {
		var n int64
		if _, err := fmt.Sscan(id, &n); err == nil && vm.keeps(n) {
			out[id] = e
		}
	}
	for _, a := range vm.appended {
		e := appendedEntry(a)
		delete(e, "id")
		out[fmt.Sprint(a.id)] = e
	}
	var err error
	if cfg["added_tokens_decoder"], err = json.Marshal(out); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	return append(b, '\n'), err
}

// maps copies a JSON object.
func maps(m map[string]json.RawMessage) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// describe says what the vocabulary is and how each model's rows are made:
// the --dry-run line.
func (vm *vocabMap) describe(source string) string {
	var filled [5]int // the only model's, the base's, a mean, zeros, a tokens: override
	for k := range vm.paths {
		for id, f := range vm.fill {
			if vm.own(k, int64(id)) >= 0 {
				continue
			}
			if _, ok := vm.over[id]; ok {
				filled[4]++
				continue
			}
			switch {
			case f == fillZero:
				filled[3]++
			case f == fillMean:
				filled[2]++
			case int(f) == vm.base:
				filled[1]++
			default:
				filled[0]++
			}
		}
	}
	s := fmt.Sprintf("tokenizer_source %s: %d tokens (%d appended), %d embedding rows; rows a model lacks: %d from the only model with the token, %d from the base, %d means, %d zeros",
		source, len(vm.tokens), len(vm.appended), vm.rows, filled[0], filled[1], filled[2], filled[3])
	if len(vm.over) > 0 {
		forced := 0
		for _, rule := range vm.over {
			if rule.force {
				forced++
			}
		}
		s += fmt.Sprintf("; tokens: %d overrides (%d forced) set %d rows", len(vm.over), forced, filled[4])
	}
	return s
}
