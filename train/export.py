"""Export a training checkpoint to a self-contained model directory (bf16 safetensors written by hand).

/usr/bin/python3 train/export.py --ckpt train/runs/diffusion/ckpt.pt --kind diffusion --out models/quench-tiny
/usr/bin/python3 train/export.py --ckpt train/runs/ar/ckpt.pt --kind ar --out models/quench-tiny-ar
"""
import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import torch_load  # noqa: E402
from tokenizer import DEFAULT_DIR, MAX_SEQ, tokenizer_config  # noqa: E402


def write_safetensors(path, tensors):
    """tensors: list of (name, torch tensor); stored as BF16 in the given order."""
    header, blobs, off = {}, [], 0
    for name, t in tensors:
        b = t.detach().to(torch.bfloat16).contiguous().view(torch.int16).numpy().astype('<i2').tobytes()
        header[name] = {'dtype': 'BF16', 'shape': list(t.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header['__metadata__'] = {'format': 'pt'}
    h = json.dumps(header, separators=(',', ':')).encode('utf-8')
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Minimal reader (BF16/F32) -> {name: float32 torch tensor}."""
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == '__metadata__':
            continue
        a, b = v['data_offsets']
        if v['dtype'] == 'BF16':
            raw = np.frombuffer(data[a:b], dtype='<u2').astype(np.uint32) << 16
            arr = raw.view(np.float32)
        else:
            arr = np.frombuffer(data[a:b], dtype='<f4')
        out[k] = torch.from_numpy(arr.copy()).view(v['shape'])
    return out


# Llama-layout block tensor names -> ours
LLAMA_NAMES = [('input_layernorm', 'attn_norm'), ('self_attn.q_proj', 'q_proj'), ('self_attn.k_proj', 'k_proj'),
               ('self_attn.v_proj', 'v_proj'), ('self_attn.o_proj', 'attn_out'),
               ('post_attention_layernorm', 'ff_norm'), ('mlp.gate_proj', 'ff_proj'), ('mlp.up_proj', 'up_proj'),
               ('mlp.down_proj', 'ff_out')]


def load_exported(model_dir):
    """An exported model directory (any of the three layouts) -> (Transformer, kind, shift): the inverse of
    `mapped`. shift: a diffusion model in the Dream layout, whose logits are shifted (row i - 1 predicts i)."""
    from model import ModelConfig, Transformer
    cfg = json.load(open(os.path.join(model_dir, 'config.json')))
    w = read_safetensors(os.path.join(model_dir, 'model.safetensors'))
    shift = cfg['model_type'] in ('Dream', 'Fast_dLLM_Qwen')
    if cfg['model_type'] == 'llada':
        kind = 'diffusion'
        mc = ModelConfig(vocab_size=cfg['vocab_size'], d_model=cfg['d_model'], n_layers=cfg['n_layers'],
                         n_heads=cfg['n_heads'], mlp_hidden=cfg['mlp_hidden_size'],
                         max_seq=cfg['max_sequence_length'], rope_theta=cfg['rope_theta'], eps=cfg['rms_norm_eps'])
        sd = {k.replace('model.transformer.', ''): v for k, v in w.items()}
        sd['head.weight'] = sd.pop('ff_out.weight')
    else:
        kind = 'diffusion' if shift else 'ar'
        mc = ModelConfig(vocab_size=cfg['vocab_size'], d_model=cfg['hidden_size'], n_layers=cfg['num_hidden_layers'],
                         n_heads=cfg['num_attention_heads'], mlp_hidden=cfg['intermediate_size'],
                         max_seq=cfg['max_position_embeddings'], rope_theta=cfg['rope_theta'], eps=cfg['rms_norm_eps'])
        ren = dict(LLAMA_NAMES)
        sd = {'wte.weight': w['model.embed_tokens.weight'], 'ln_f.weight': w['model.norm.weight'],
              'head.weight': w['lm_head.weight']}
        for k, v in w.items():
            if k.startswith('model.layers.'):
                i, rest = k[len('model.layers.'):].split('.', 1)
                if rest.endswith('.bias'):  # the Dream layout's q/k/v biases: written as zeros, the model has none
                    assert not v.any(), f'{k}: non-zero bias (this model has no biases)'
                    continue
                sd[f'blocks.{i}.{ren[rest[:-len(".weight")]]}.weight'] = v
    m = Transformer(mc)
    m.load_state_dict(sd)
    return m, kind, shift


def mapped(sd, kind, n_layers, shift=False):
    """Our state dict -> [(name, tensor)] in the exported layout: LLaDA (diffusion), Dream (diffusion with
    shifted logits: the Qwen2 names with zero q/k/v biases, as Dream checkpoints have them) or Llama (AR)."""
    res = []
    if kind == 'diffusion' and not shift:
        p = 'model.transformer.'
        res.append((p + 'wte.weight', sd['wte.weight']))
        for i in range(n_layers):
            for n in ['attn_norm', 'q_proj', 'k_proj', 'v_proj', 'attn_out', 'ff_norm', 'ff_proj', 'up_proj', 'ff_out']:
                res.append((f'{p}blocks.{i}.{n}.weight', sd[f'blocks.{i}.{n}.weight']))
        res.append((p + 'ln_f.weight', sd['ln_f.weight']))
        res.append((p + 'ff_out.weight', sd['head.weight']))
    else:
        res.append(('model.embed_tokens.weight', sd['wte.weight']))
        for i in range(n_layers):
            for hf, ours in LLAMA_NAMES:
                res.append((f'model.layers.{i}.{hf}.weight', sd[f'blocks.{i}.{ours}.weight']))
                if kind == 'diffusion' and hf in ('self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj'):
                    res.append((f'model.layers.{i}.{hf}.bias', torch.zeros(sd[f'blocks.{i}.{ours}.weight'].shape[0])))
        res.append(('model.norm.weight', sd['ln_f.weight']))
        res.append(('lm_head.weight', sd['head.weight']))
    return res


def config_json(kind, c, shift=False, block=0):
    if kind == 'diffusion' and block:  # block diffusion: the Fast-dLLM v2 layout (Qwen2 names, zero q/k/v biases)
        return {'architectures': ['Fast_dLLM_QwenForCausalLM'], 'model_type': 'Fast_dLLM_Qwen', 'bd_size': block,
                'hidden_size': c['d_model'], 'intermediate_size': c['mlp_hidden'], 'num_hidden_layers': c['n_layers'],
                'num_attention_heads': c['n_heads'], 'num_key_value_heads': c['n_heads'],
                'vocab_size': c['vocab_size'], 'max_position_embeddings': c['max_seq'],
                'rope_theta': c['rope_theta'], 'rms_norm_eps': c['eps'], 'tie_word_embeddings': False,
                'mask_token_id': 5, 'bos_token_id': 1, 'eos_token_id': 0, 'pad_token_id': 0,
                'hidden_act': 'silu', 'torch_dtype': 'bfloat16'}
    if kind == 'diffusion' and shift:
        return {'architectures': ['DreamModel'], 'model_type': 'Dream', 'hidden_size': c['d_model'],
                'intermediate_size': c['mlp_hidden'], 'num_hidden_layers': c['n_layers'],
                'num_attention_heads': c['n_heads'], 'num_key_value_heads': c['n_heads'],
                'vocab_size': c['vocab_size'], 'max_position_embeddings': c['max_seq'],
                'rope_theta': c['rope_theta'], 'rms_norm_eps': c['eps'], 'tie_word_embeddings': False,
                'mask_token_id': 5, 'bos_token_id': 1, 'eos_token_id': 0, 'pad_token_id': 0,
                'hidden_act': 'silu', 'torch_dtype': 'bfloat16'}
    if kind == 'diffusion':
        return {'architectures': ['LLaDAModelLM'], 'model_type': 'llada', 'd_model': c['d_model'],
                'n_layers': c['n_layers'], 'n_heads': c['n_heads'], 'n_kv_heads': c['n_heads'],
                'mlp_hidden_size': c['mlp_hidden'], 'vocab_size': c['vocab_size'],
                'embedding_size': c['vocab_size'], 'rope_theta': c['rope_theta'], 'rms_norm_eps': c['eps'],
                'max_sequence_length': c['max_seq'], 'mask_token_id': 5, 'eos_token_id': 0, 'pad_token_id': 0,
                'bos_token_id': 1, 'weight_tying': False, 'include_bias': False, 'block_type': 'llama',
                'activation_type': 'silu', 'torch_dtype': 'bfloat16'}
    return {'architectures': ['LlamaForCausalLM'], 'model_type': 'llama', 'hidden_size': c['d_model'],
            'intermediate_size': c['mlp_hidden'], 'num_hidden_layers': c['n_layers'],
            'num_attention_heads': c['n_heads'], 'num_key_value_heads': c['n_heads'],
            'head_dim': c['d_model'] // c['n_heads'], 'vocab_size': c['vocab_size'],
            'max_position_embeddings': c['max_seq'], 'rope_theta': c['rope_theta'], 'rms_norm_eps': c['eps'],
            'tie_word_embeddings': False, 'bos_token_id': 1, 'eos_token_id': [0, 4], 'pad_token_id': 0,
            'hidden_act': 'silu', 'torch_dtype': 'bfloat16'}


def hardware(ck):
    dev = ck.get('device', 'cpu')
    if dev == 'cpu':
        return f"CPU only, {ck['args']['threads']} thread(s)"
    return f"one {dev} GPU, {ck['args'].get('workers', 0)} data-generator processes"


def same_batches(a):
    if a.get('kind') != 'both':
        return ''
    return ('; the diffusion model and its autoregressive twin were trained in the same process on the very same '
            'batches, step for step')


def initialised(a):
    if not a.get('init_from'):
        return ''
    return (f"\n- Started from the weights of the exported model `{a['init_from']}` (not from a random initialisation); "
            'its own training is part of this model\'s compute')


ENGLISH_FAMILIES = {'define': 'word definitions (WordNet)', 'use_word': 'example sentences (WordNet)',
                    'quote_verse': 'verse quotation (KJV)', 'continue_text': 'text continuation (KJV, WordNet)',
                    'describe': 'short descriptions of common nouns from their glosses ("Tell me about the sea.")'}


def model_card(kind, c, ck, n_params, shift=False):
    import tasks
    a = ck['args']
    block = a.get('block', 0) if kind == 'diffusion' else 0
    layout = ('Fast-dLLM v2 (Qwen2 names, zero q/k/v biases)' if block else
              'Dream (Qwen2 names, zero q/k/v biases)' if shift else 'LLaDA' if kind == 'diffusion' else 'Llama')
    import data
    fams = ', '.join(f"{f}{' (x%g)' % tasks.FAMILY_WEIGHTS[f] if tasks.FAMILY_WEIGHTS[f] != 1 else ''}" for f in tasks.FAMILIES)
    mix = [float(x) for x in a['mix'].split(',')] if a.get('mix') else data.MIX
    syn, eng, plain = (round(x * 100 / sum(mix)) for x in mix)
    # the English families the run drew from (checkpoints written before `describe` existed do not record them)
    english = ', '.join(ENGLISH_FAMILIES.get(f, f) for f in ck.get('english', ['define', 'use_word', 'quote_verse', 'continue_text']))
    objective = ('masked diffusion (LLaDA-style SFT objective: response tokens masked with probability t ~ U(0.001, 1), '
                 f"loss 1/t-weighted cross-entropy on masked positions, padding positions weighted "
                 f"{a.get('pad_weight', 1.0):g}; "
                 + (f'block diffusion as in Fast-dLLM v2: blocks of {block} positions, each masked with its own t, '
                    'attention causal across blocks and bidirectional within one, trained on the clean and the masked '
                    'copy side by side; shifted logits: the prediction for position i is read from the output at i - 1, '
                    "for a block's first position from the clean previous block)" if block else
                    'bidirectional attention'
                    + ('; shifted logits as in Dream: the prediction for position i is read from the output at i - 1)'
                       if shift else ')'))
                 if kind == 'diffusion' else
                 'autoregressive next-token prediction (causal attention) on response tokens and plain text')
    return f"""# quench-tiny{('-bd' if block else '') if kind == 'diffusion' else '-ar'}

A tiny {'diffusion' if kind == 'diffusion' else 'autoregressive'} language model trained {'by adapting an exported model (below)' if a.get('init_from') else 'from scratch'} for quench,
a TypeScript engine for diffusion language models. It is a test and demo model, not a useful assistant.

## Architecture

- Llama-style transformer blocks: RMSNorm (eps {c['eps']}), multi-head attention with NeoX-style RoPE
  (theta {c['rope_theta']:g}), SwiGLU MLP, no biases, untied output head.
- d_model {c['d_model']}, {c['n_layers']} layers, {c['n_heads']} heads (head_dim {c['d_model'] // c['n_heads']},
  n_kv_heads = n_heads), MLP hidden {c['mlp_hidden']}, vocab {c['vocab_size']}, max sequence length {c['max_seq']}.
- {n_params:,} parameters, stored as bfloat16 ({layout} tensor layout).
- Objective: {objective}.
- Tokenizer: byte-level BPE, {c['vocab_size']} tokens, digits split individually. Special tokens:
  `<|endoftext|>` (0, eos/pad), `<|startoftext|>` (1, bos), `<|start_header_id|>` (2), `<|end_header_id|>` (3),
  `<|eot_id|>` (4, end of turn), `<|mdm_mask|>` (5, mask).
- Chat format: `<|startoftext|><|start_header_id|>user<|end_header_id|>\\n\\n{{prompt}}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n`.

## Training data

- Synthetic instruction tasks (about {syn}% of sequences), generated by `train/tasks.py`, families sampled with these weights
  (x: relative weight; arithmetic and sorting are upweighted): {fams}.
  For each family, 50 held-out instances (`train/heldout.jsonl`, seed {tasks.HELDOUT_SEED}) are never used in training.
- English chat tasks (about {eng}%): {english}; from WordNet 3.0 (WordNet 3.0 license, Princeton University;
  permissive) and the King James Bible (public domain).
- Plain text (about {plain}%): WordNet glosses and examples, King James Bible chapters.

## Training compute

- {hardware(ck)}, {'fp32 (no autocast)' if ck.get('precision') == 'fp32' else 'bfloat16 autocast'}, wall-clock budget {a['minutes']:g} minutes
  ({ck['elapsed'] / 60:.1f} minutes trained){same_batches(a)}.{initialised(a)}
- {ck['step']} optimizer steps, {ck['tokens']:,} tokens processed (including padding), AdamW
  (lr {a['lr']:g}, betas (0.9, 0.95), weight decay 0.1, grad clip 1.0), warmup then cosine decay.
- Final training loss: {ck.get('last_loss', float('nan')):.4f}.

## Evaluation

The evaluation table is in BENCHMARKS.md.

## License

Weights and synthetic data: generated for quench. Source texts: WordNet 3.0 (WordNet 3.0 license), King James Bible
(public domain).
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--ckpt', required=True)
    ap.add_argument('--kind', choices=['diffusion', 'ar'], required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--tokenizer', default=DEFAULT_DIR)
    args = ap.parse_args()
    ck = torch_load(args.ckpt, 'cpu')
    assert ck['kind'] == args.kind, (ck['kind'], args.kind)
    c = ck['config']
    sd = ck['model']
    os.makedirs(args.out, exist_ok=True)
    shift = bool(ck['args'].get('shift')) and args.kind == 'diffusion'
    tensors = mapped(sd, args.kind, c['n_layers'], shift)
    st = os.path.join(args.out, 'model.safetensors')
    write_safetensors(st, tensors)
    back = read_safetensors(st)
    for n, t in tensors:
        assert torch.equal(back[n], t.to(torch.bfloat16).float()), n
    with open(os.path.join(args.out, 'config.json'), 'w') as f:
        json.dump(config_json(args.kind, c, shift, ck['args'].get('block', 0) if shift else 0), f, indent=2)
    shutil.copyfile(os.path.join(args.tokenizer, 'tokenizer.json'), os.path.join(args.out, 'tokenizer.json'))
    with open(os.path.join(args.out, 'tokenizer_config.json'), 'w') as f:
        json.dump(tokenizer_config(c['max_seq']), f, indent=2, ensure_ascii=False)
    with open(os.path.join(args.out, 'generation_config.json'), 'w') as f:
        gen = {'bos_token_id': 1, 'eos_token_id': [0, 4], 'pad_token_id': 0, 'max_new_tokens': 64}
        if shift and ck['args'].get('block', 0):
            # quench's decoding defaults for a block model: threshold 0.95 committing left to right
            # (in_order: +4.3 points on the held-out tasks at the same tokens per forward, BENCHMARKS.md);
            # a block's first token decoded with the others (lead_token false: with blocks of 4 a
            # forward of its own for it costs a fifth of the tokens per forward for no accuracy, BENCHMARKS.md)
            gen['quench'] = {'threshold': 0.95, 'in_order': True, 'lead_token': False}
        json.dump(gen, f, indent=2)
    n_params = sum(t.numel() for _, t in tensors)
    with open(os.path.join(args.out, 'README.md'), 'w') as f:
        f.write(model_card(args.kind, c, ck, n_params, shift))
    print(f'wrote {args.out}: {len(tensors)} tensors, {n_params:,} params, {os.path.getsize(st) / 1e6:.1f} MB')


if __name__ == '__main__':
    main()
