"""Private RAG with LangChain, through `veil proxy`.

The documents are embedded through veil (sealed to the enclave), retrieved locally by
cosine similarity, and the question is answered through veil with the retrieved context.
LangChain talks to the proxy as it would to OpenAI; only base_url changes.

    veil proxy --gateway URL --api-key KEY --listen 127.0.0.1:8080 &
    python3 client/examples/rag_langchain.py http://127.0.0.1:8080/v1

Prints one JSON line: the retrieved document, the answer, and the question.
Needs `langchain-openai` and `numpy` (client/tests/python/requirements.txt).
"""

import json
import sys

from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

base_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/v1"
chat_model = sys.argv[2] if len(sys.argv) > 2 else "SmolLM2-135M-Instruct"
emb_model = sys.argv[3] if len(sys.argv) > 3 else "all-MiniLM-L6-v2"
question = sys.argv[4] if len(sys.argv) > 4 else "What is the door code of the Lisbon office?"

DOCUMENTS = [
    "The Lisbon office door code is 4417; it changes every quarter.",
    "Payroll runs on the 25th of each month, or the previous working day.",
    "The VPN requires a hardware key registered with the IT desk.",
    "Expense claims above 500 euros need a director's approval.",
]

embeddings = OpenAIEmbeddings(
    model=emb_model,
    base_url=base_url,
    api_key="unused-the-proxy-holds-the-key",
    # Send the texts as they are: the enclave tokenizes them itself (and no tokenizer
    # download is needed here).
    check_embedding_ctx_length=False,
)
store = InMemoryVectorStore(embeddings)
store.add_documents([Document(page_content=d) for d in DOCUMENTS])
retriever = store.as_retriever(search_kwargs={"k": 1})

llm = ChatOpenAI(
    model=chat_model,
    base_url=base_url,
    api_key="unused-the-proxy-holds-the-key",
    temperature=0,
    max_tokens=48,
)
prompt = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer using only this context:\n{context}"),
        ("human", "{question}"),
    ]
)
retrieved = []


def context(docs):
    retrieved.extend(d.page_content for d in docs)
    return "\n".join(d.page_content for d in docs)


chain = (
    {"context": retriever | RunnableLambda(context), "question": RunnablePassthrough()}
    | prompt
    | llm
    | StrOutputParser()
)
answer = chain.invoke(question)
print(json.dumps({"question": question, "retrieved": retrieved, "answer": answer}))
