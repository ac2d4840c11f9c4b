// Hoshikage's flat C access to llama.cpp's own chat handling (common/chat.h) and grammar tools
// (common/json-schema-to-grammar.h), so structured output and tool calls behave as llama-server's
// do for the same model, without re-creating per-family formats or a schema converter.
//
// Every function takes and returns JSON text. Results are malloc'd (free with hk_chat_free);
// on failure a function returns NULL and sets *error to a malloc'd message. No C++ exception
// ever crosses into the caller: llama.cpp's grammar code throws on a token the grammar rejects,
// which through a plain C call would abort the process, so sampling with a grammar goes
// through hk_sampler_sample_checked / hk_sampler_accept_checked here.
//
// Nothing in this file is llama.cpp source; it calls llama.cpp's public common API.

#include "chat.h"
#include "json-schema-to-grammar.h"
#include "llama.h"

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {

char * copy_out(const std::string & s) {
    char * out = static_cast<char *>(std::malloc(s.size() + 1));
    if (out != nullptr) {
        std::memcpy(out, s.data(), s.size());
        out[s.size()] = '\0';
    }
    return out;
}

void set_error(char ** error, const std::string & message) {
    if (error != nullptr) {
        *error = copy_out(message);
    }
}

// Runs f() and returns its result; any exception instead sets *error and returns ``failed``,
// so that no C++ exception crosses into the C caller.
template <typename R, typename F>
R guarded(char ** error, const char * what, R failed, F && f) {
    try {
        return f();
    } catch (const std::exception & e) {
        set_error(error, e.what());
    } catch (...) {
        set_error(error, what);
    }
    return failed;
}

// Regex for a trigger, as common_sampler_init builds it (common/sampling.cpp).
std::string escape_regex(const std::string & s) {
    static const std::string special = "\\^$.|?*+()[]{}";
    std::string out;
    for (char c : s) {
        if (special.find(c) != std::string::npos) {
            out += '\\';
        }
        out += c;
    }
    return out;
}

std::string anchored(const std::string & pattern) {
    if (pattern.empty()) {
        return "^$";
    }
    return (pattern.front() != '^' ? "^" : "") + pattern + (pattern.back() != '$' ? "$" : "");
}

common_json string_list(const std::vector<std::string> & items) {
    common_json out = common_json::array();
    for (const auto & s : items) {
        out.push_back(s);
    }
    return out;
}

}  // namespace

extern "C" {

void hk_chat_free(void * p) { std::free(p); }

// {"schema": <JSON Schema>} -> GBNF text with root rule "root".
char * hk_json_schema_to_grammar(const char * schema_json, char ** error) {
    return guarded(error, "unknown error converting the JSON schema", static_cast<char *>(nullptr), [&]() {
        return copy_out(json_schema_to_grammar(common_json::parse(schema_json)));
    });
}

// The model's chat templates (its own, or template_override when non-empty), for hk_chat_apply.
void * hk_chat_templates_init(const struct llama_model * model, const char * template_override, char ** error) {
    return guarded(error, "unknown error reading the chat template", static_cast<void *>(nullptr), [&]() {
        auto tmpls = common_chat_templates_init(model, template_override ? template_override : "");
        return tmpls.release();
    });
}

void hk_chat_templates_free(void * tmpls) {
    common_chat_templates_free(static_cast<common_chat_templates *>(tmpls));
}

// {"supports_tools": bool, "supports_tool_calls": bool, ...}: what llama.cpp found the template can do.
char * hk_chat_templates_caps(void * tmpls_handle, char ** error) {
    return guarded(error, "unknown error reading the template's capabilities",
                   static_cast<char *>(nullptr), [&]() {
        common_json out = common_json::object();
        for (const auto & kv : common_chat_templates_get_caps(static_cast<common_chat_templates *>(tmpls_handle))) {
            out[kv.first] = kv.second;
        }
        return copy_out(out.dump());
    });
}

// inputs: {"messages": [OpenAI messages], "tools": [OpenAI tools], "tool_choice": "auto"|"none"|"required",
//          "json_schema": <schema or null>, "parallel_tool_calls": bool, "add_generation_prompt": bool,
//          "enable_thinking": bool}
// -> {"prompt", "format", "format_name", "grammar", "grammar_lazy", "trigger_patterns": [regex],
//     "trigger_tokens": [id], "preserved_tokens": [text], "additional_stops": [text],
//     "generation_prompt", "parser", "supports_parallel_tool_calls"}
char * hk_chat_apply(void * tmpls_handle, const char * inputs_json, char ** error) {
    return guarded(error, "unknown error applying the chat template", static_cast<char *>(nullptr), [&]() {
        auto * tmpls = static_cast<common_chat_templates *>(tmpls_handle);
        common_json in = common_json::parse(inputs_json);
        common_chat_templates_inputs inputs;
        inputs.messages = common_chat_msgs_parse_oaicompat(in.at("messages"));
        if (in.contains("tools") && !in.at("tools").is_null()) {
            inputs.tools = common_chat_tools_parse_oaicompat(in.at("tools"));
        }
        if (in.contains("tool_choice")) {
            inputs.tool_choice = common_chat_tool_choice_parse_oaicompat(in.at("tool_choice").get<std::string>());
        }
        if (in.contains("json_schema") && !in.at("json_schema").is_null()) {
            inputs.json_schema = in.at("json_schema").dump();
        }
        auto caps = common_chat_templates_get_caps(tmpls);
        inputs.parallel_tool_calls = in.contains("parallel_tool_calls")
            ? in.at("parallel_tool_calls").get<bool>() : caps["supports_parallel_tool_calls"];
        if (in.contains("add_generation_prompt")) {
            inputs.add_generation_prompt = in.at("add_generation_prompt").get<bool>();
        }
        if (in.contains("enable_thinking")) {
            inputs.enable_thinking = in.at("enable_thinking").get<bool>();
        }
        inputs.use_jinja = true;
        common_chat_params params = common_chat_templates_apply(tmpls, inputs);

        common_json patterns = common_json::array();
        common_json tokens = common_json::array();
        for (const auto & t : params.grammar_triggers) {
            switch (t.type) {
                case COMMON_GRAMMAR_TRIGGER_TYPE_WORD:         patterns.push_back(escape_regex(t.value)); break;
                case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN:      patterns.push_back(t.value); break;
                case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL: patterns.push_back(anchored(t.value)); break;
                case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN:        tokens.push_back((int32_t) t.token); break;
            }
        }
        common_json out = common_json::object();
        out["prompt"] = params.prompt;
        out["format"] = (int32_t) params.format;
        out["format_name"] = std::string(common_chat_format_name(params.format));
        out["grammar"] = params.grammar;
        out["grammar_lazy"] = params.grammar_lazy;
        out["trigger_patterns"] = patterns;
        out["trigger_tokens"] = tokens;
        out["preserved_tokens"] = string_list(params.preserved_tokens);
        out["additional_stops"] = string_list(params.additional_stops);
        out["generation_prompt"] = params.generation_prompt;
        out["parser"] = params.parser;
        out["supports_parallel_tool_calls"] = (bool) caps["supports_parallel_tool_calls"];
        return copy_out(out.dump());
    });
}

// parser: {"format", "generation_prompt", "parser"} as hk_chat_apply returned them.
// -> {"content", "reasoning_content", "tool_calls": [{"name", "arguments", "id"}]}
char * hk_chat_parse(const char * parser_json, const char * text, bool is_partial, char ** error) {
    return guarded(error, "unknown error parsing the model's output", static_cast<char *>(nullptr), [&]() {
        common_json in = common_json::parse(parser_json);
        common_chat_parser_params params;
        params.format = static_cast<common_chat_format>(in.at("format").get<int32_t>());
        params.generation_prompt = in.at("generation_prompt").get<std::string>();
        params.parse_tool_calls = true;
        const std::string parser = in.at("parser").get<std::string>();
        if (!parser.empty()) {
            params.parser.load(parser);
        }
        common_chat_msg msg = common_chat_parse(text, is_partial, params);
        common_json calls = common_json::array();
        for (const auto & call : msg.tool_calls) {
            common_json c = common_json::object();
            c["name"] = call.name;
            c["arguments"] = call.arguments;
            c["id"] = call.id;
            calls.push_back(c);
        }
        common_json out = common_json::object();
        out["content"] = msg.content;
        out["reasoning_content"] = msg.reasoning_content;
        out["tool_calls"] = calls;
        return copy_out(out.dump());
    });
}

// llama_sampler_sample, with any exception (a grammar that rejects every candidate) turned
// into a return of -1 and *error set. 0 on success, the token in *token.
int32_t hk_sampler_sample_checked(struct llama_sampler * smpl, struct llama_context * ctx, int32_t idx,
                                  llama_token * token, char ** error) {
    return guarded(error, "unknown error in the sampler", int32_t(-1), [&]() {
        *token = llama_sampler_sample(smpl, ctx, idx);
        return 0;
    });
}

// llama_sampler_accept (e.g. feeding a grammar tokens the template already placed), exception-safe.
int32_t hk_sampler_accept_checked(struct llama_sampler * smpl, llama_token token, char ** error) {
    return guarded(error, "unknown error in the sampler", int32_t(-1), [&]() {
        llama_sampler_accept(smpl, token);
        return 0;
    });
}

// llama_sampler_init_grammar / _lazy_patterns, exception-safe (NULL and *error on a bad grammar).
struct llama_sampler * hk_sampler_init_grammar_checked(const struct llama_vocab * vocab, const char * grammar,
                                                       const char * const * trigger_patterns, size_t n_patterns,
                                                       const llama_token * trigger_tokens, size_t n_tokens,
                                                       bool lazy, char ** error) {
    return guarded(error, "unknown error building the grammar sampler",
                   static_cast<struct llama_sampler *>(nullptr), [&]() {
        llama_sampler * s = lazy
            ? llama_sampler_init_grammar_lazy_patterns(vocab, grammar, "root", const_cast<const char **>(trigger_patterns),
                                                       n_patterns, trigger_tokens, n_tokens)
            : llama_sampler_init_grammar(vocab, grammar, "root");
        if (s == nullptr) {
            set_error(error, "llama.cpp could not parse the grammar");
        }
        return s;
    });
}

}  // extern "C"
